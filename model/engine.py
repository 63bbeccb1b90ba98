"""Compatibility module: the engine's public names, which now live in smaller modules.

``from model.engine import Segmenter, get_config, ...`` keeps working for scripts outside the
repository; new code imports from the module that defines a name:

* model/prompts.py: Box, BoxError, Seeds, BoxPrompt
* model/config.py: EngineConfig, REFERENCE, DEFAULT, QUALITY, CONFIGS, get_config
* model/cnn.py: CamNet, CnnOutput, ClassScore, pool_voc_cams, normalise, softmax
* model/cut.py: the cut seam (Cut, GrabCutCut, CUTS, windowed_cut)
* model/segmenter.py: Segmenter, MaskResult, mask_iou, MIN_BOX_SIDE
* model/pool.py: available_cores
"""

from __future__ import annotations

from .cnn import CamNet, ClassScore, CnnOutput, class_probabilities, normalise, pool_voc_cams, softmax
from .config import CONFIGS, DEFAULT, QUALITY, REFERENCE, EngineConfig, get_config
from .cut import CROP_MIN_PX, CUTS, Cut, CutInputs, GrabCutCut, windowed_cut
from .pool import available_cores
from .prompts import Box, BoxError, BoxPrompt, Seeds
from .segmenter import MIN_BOX_SIDE, MaskResult, Segmenter, mask_iou

__all__ = [
    "CONFIGS",
    "CROP_MIN_PX",
    "CUTS",
    "DEFAULT",
    "MIN_BOX_SIDE",
    "QUALITY",
    "REFERENCE",
    "Box",
    "BoxError",
    "BoxPrompt",
    "CamNet",
    "ClassScore",
    "CnnOutput",
    "Cut",
    "CutInputs",
    "EngineConfig",
    "GrabCutCut",
    "MaskResult",
    "Seeds",
    "Segmenter",
    "available_cores",
    "class_probabilities",
    "get_config",
    "mask_iou",
    "normalise",
    "pool_voc_cams",
    "softmax",
    "windowed_cut",
]
