"""What every CVAT route shares: one Segmenter, label matching, detection and interaction.

Routes (cvat-sdk functions, nuclio handlers, the tags command) only translate CVAT's formats
to these calls and back.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backend.config import read_setting
from backend.labels import LabelMap
from model import VOC_CLASSES, Box, BoxError, BoxPrompt, Seeds, Segmenter, Technique
from model.config import get_config
from model.polygons import mask_to_polygons

# The detector's default class threshold: the same 0.2 as Segmenter.predict_classes, the
# CNN's "prediction" in the report. CVAT's --conf-threshold / "threshold" overrides it.
DEFAULT_THRESHOLD = 0.2
LABEL_MAP_ENV = "CAMCUT_LABEL_MAP"


class PromptError(ValueError):
    """An interaction prompt the engine cannot use (box outside the frame, no point, ...)."""


@dataclass(frozen=True)
class Detection:
    label: str  # the caller's label name (a CVAT label), not the VOC class
    voc_class: str
    mask: np.ndarray  # bool (H, W)
    confidence: float  # the CNN's probability of the class


def label_map(path: str | None = None) -> LabelMap:
    """The mapping file of the Label Studio backend (CAMCUT_LABEL_MAP) unless ``path`` is given."""
    return LabelMap.from_file(path if path is not None else os.environ.get(LABEL_MAP_ENV) or None)


def resolve_labels(names: Sequence[str], labels: LabelMap) -> dict[str, str]:
    """label name -> VOC class, for the names that have one (first name wins per class)."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        voc = labels.resolve(name)
        if voc is not None and voc not in taken:
            out[name] = voc
            taken.add(voc)
    return out


class Engine:
    """One Segmenter, reused for every frame (its CNN weights load once), in the configuration the
    Label Studio backend serves (CAMCUT_CONFIG, featcut by default)."""

    def __init__(self, segmenter: Segmenter | None = None, threads: int = 1) -> None:
        self.segmenter = segmenter or Segmenter(get_config(read_setting("CAMCUT_CONFIG")), threads=threads)

    def set_image(self, rgb: np.ndarray) -> Segmenter:
        self.segmenter.set_image(rgb)
        return self.segmenter

    def detect(self, rgb: np.ndarray, classes: dict[str, str], threshold: float | None = None) -> list[Detection]:
        """Masks of the classes the CNN finds (probability >= threshold) among ``classes``
        (label -> VOC class). Classes found with an empty mask are left out."""
        th = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        seg = self.set_image(rgb)
        prob = {s.voc_class: s.probability for s in seg.class_probabilities()}
        found = [(lab, voc) for lab, voc in classes.items() if prob.get(voc, 0.0) >= th]
        if not found:
            return []
        results = seg.segment_classes([(voc, None) for _, voc in found])
        out = []
        for (lab, voc), res in zip(found, results, strict=True):
            if isinstance(res, Exception) or not res.mask.any():
                continue
            out.append(Detection(lab, voc, res.mask, prob[voc]))
        return out

    def interact(
        self, pos: Sequence[Sequence[float]], neg: Sequence[Sequence[float]], bbox: Sequence[float] | None
    ) -> np.ndarray:
        """Mask of one object on the image last given to set_image: a box (x1, y1, x2, y2)
        with optional clicks inside it, or clicks alone. CVAT interactors carry no label, so the
        box is cut without a CAM (technique "grabcut": featcut's own cut in featcut) with the
        clicks as hard seeds."""
        seg = self.segmenter
        h, w = seg.image.shape[:2]
        seeds = Seeds(tuple(_point(p) for p in pos), tuple(_point(p) for p in neg))
        if bbox is not None:
            if len(bbox) != 4:
                raise PromptError(f"a box needs 4 numbers (x1, y1, x2, y2), got {list(bbox)}")
            box = Box(*(float(v) for v in bbox))
            res = seg.segment_boxes([BoxPrompt(box, None, Technique("grabcut"), None if seeds.is_empty() else seeds)])[0]
            if isinstance(res, BoxError):
                raise PromptError(str(res)) from res
            if isinstance(res, Exception):
                raise res
            return res.mask
        if not seeds.positive_points:
            raise PromptError("no box and no positive point: nothing says where the object is")
        if not any(0 <= x < w and 0 <= y < h for x, y in seeds.positive_points):
            raise PromptError(f"no positive point inside the {w}x{h} frame")
        try:
            return seg.segment_seeds(seeds).mask
        except BoxError as exc:  # a non-finite click
            raise PromptError(str(exc)) from exc


def _point(p: Sequence[float]) -> tuple[float, float]:
    if len(p) != 2:
        raise PromptError(f"a point needs 2 numbers (x, y), got {list(p)}")
    return float(p[0]), float(p[1])


def polygons(mask: np.ndarray) -> list[list[float]]:
    return mask_to_polygons(mask)


__all__ = ["DEFAULT_THRESHOLD", "Detection", "Engine", "PromptError", "VOC_CLASSES", "label_map", "polygons", "resolve_labels"]
