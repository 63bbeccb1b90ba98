"""camcut's core: SqueezeNet CAM + OpenCV GrabCut, free of web code.

The evaluator (``evaluator``) and the Label Studio backend (``backend``) both call this API.
"""

from .cnn import CamNet, ClassScore, CnnOutput
from .config import REFERENCE, EngineConfig
from .image import ImageError, decode_image, to_rgb_uint8
from .prompts import Box, BoxError, BoxPrompt, Seeds
from .segmenter import MaskResult, Segmenter
from .squeezenet import WeightsError
from .techniques import Technique, ThresholdError, Thresholds, digitize
from .voc import VOC_CLASSES, UnknownClassError

__all__ = [
    "REFERENCE",
    "Box",
    "BoxError",
    "BoxPrompt",
    "CamNet",
    "ClassScore",
    "CnnOutput",
    "EngineConfig",
    "ImageError",
    "MaskResult",
    "Seeds",
    "Segmenter",
    "Technique",
    "ThresholdError",
    "Thresholds",
    "UnknownClassError",
    "VOC_CLASSES",
    "WeightsError",
    "decode_image",
    "digitize",
    "to_rgb_uint8",
]
