"""What a Segmenter call returns and how it is scored: :class:`MaskResult`, :func:`mask_iou`,
the CAM score of a mask and the technique of its second opinion (see model/segmenter.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from . import voc
from .techniques import Technique, Thresholds

Task = Literal["box", "tag"]


@dataclass
class MaskResult:
    """A binary mask and how it was obtained.

    ``fallback`` names a defined edge case that replaced the requested technique:
    "box_too_small" (box returned filled), "no_cam" (class has no ImageNet counterpart or an
    all-zero CAM; a box fell back to naked GrabCut, a tag's mask is empty),
    "cam_no_foreground" (digitized CAM had no foreground in the box: naked GrabCut instead),
    "no_background" (nothing to model the background: the initial mask is returned),
    "no_positive_seed" (segment_seeds without a positive click or stroke: empty mask),
    "cut_empty" (a box's cut kept no pixel: the box's CAM at ``box_empty_fallback`` of its peak).
    """

    mask: np.ndarray  # (H, W) bool
    technique: Technique
    score: float
    fallback: str | None = None
    learned: Any = field(default=None, repr=False, compare=False)  # model/head.py Hook of a box answer
    confidence: float | None = None  # the cut's own confidence in the mask (model.cut.CutReport); None: none given
    agreement: float | None = None  # the mask's IoU with its second opinion, once that is cut (``agreement=True``)

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


def agreement_score(agreement: float, confidence: float | None) -> float:
    """The training-free score of an answer that has a second opinion: its agreement with it,
    averaged with the cut's own confidence in the answer where the cut gives one. The two are
    different evidence (does another cut find the same object; does the per-image model believe
    what it kept), each in [0, 1], so the plain mean, with no weight fitted to VOC: on the 579
    boxes of the 205 VOC images (featcut) Spearman rho with the true IoU 0.435 for the agreement
    alone, 0.473 for the confidence alone, 0.564 for the mean, a gain on both halves (README
    "Mask scores")."""
    return agreement if confidence is None else 0.5 * (agreement + confidence)


def tag_support_score(support: float, probability: float) -> float:
    """A tag answer's training-free score: the mean share the propagated CAMs give its pixels
    (model/tagprop.py ``TagShares.support``) averaged with the CNN's probability of the class,
    by the same rule as agreement_score (two kinds of evidence in [0, 1], the plain mean). On
    the 347 tags of the 205 VOC images (featcut) Spearman rho with the true IoU: the mean CAM in
    the mask (served until session 9) 0.050, the support 0.481, the probability 0.446, their
    mean 0.530, a gain on both halves (README "Mask scores")."""
    return 0.5 * (support + probability)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (1.0 when both are empty)."""
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def known_class(voc_class: str) -> bool:
    try:
        voc.voc_index(voc_class)
    except voc.UnknownClassError:
        return False
    return True


def cam_thresholds(tech: Technique) -> Thresholds:
    """The thresholds of a CAM technique (callers have ruled out naked GrabCut, which has none)."""
    th = tech.thresholds
    if th is None:  # pragma: no cover - guarded by tech.kind checks at every call site
        raise ValueError(f"technique {tech.label!r} has no thresholds")
    return th


def second_opinion(tech: Technique, has_class: bool, task: Task) -> Technique | None:
    """The technique whose mask a result is compared with to estimate its quality.

    A mask that a different technique reproduces is more often right: on VOC the IoU
    between the two ranks masks by their true IoU better than the CAM's strength does
    (Spearman's rho in README "Mask scores"). Boxes: naked GrabCut vs the CAM technique;
    tags: F PB 0.5 vs the configured technique. None: no second opinion exists (naked
    GrabCut of a box without a class), the score stays the CAM's (0).
    """
    if task == "box":
        if tech.kind != "grabcut":
            return Technique("grabcut")
        return Technique("fpf", 0.6) if has_class else None
    return Technique("fpb", 0.5) if tech.variant != "fpb" else Technique("pfpb", 0.3)


def cam_score(mask: np.ndarray, cam: np.ndarray | None) -> float:
    """Mean normalised CAM inside the mask (0 with no CAM or an empty mask)."""
    if cam is None or not mask.any():
        return 0.0
    return float(cam[mask].mean())
