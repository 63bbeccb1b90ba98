"""Learning thresholds from annotators' corrections (no web code here).

An annotator's corrected mask is ground truth for the prompt that produced the prediction
(a box + class, or a tag alone). :func:`score_candidates` re-runs the prompt with every
candidate technique (e.g. the configured variant at t = 0.1 .. 0.9) and returns each
candidate's IoU with the correction; a caller accumulates these per class and
:func:`choose_technique` picks the best average once enough corrections are in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .prompts import Box
from .segmenter import Segmenter, mask_iou
from .techniques import Technique

DEFAULT_TS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# A technique replaces the configured one only when its mean IoU on the corrections is higher by
# at least this: with a handful of corrections smaller differences are noise (featcut's masks
# barely depend on t, and F PF 0.6 beat its 0.7 on 5 cat corrections and lost 0.003 on 8 held-out
# images, tests/backend/test_correction_loop.py). The same 0.01 is the gain the loop must show.
MIN_GAIN = 0.01


@dataclass(frozen=True)
class Prompt:
    """What a prediction was made from: a box (box task) or only a class (tag task)."""

    voc_class: str
    box: Box | None = None
    others: tuple[str, ...] = ()  # class prompts: the image's other tags (they compete for pixels)

    @property
    def kind(self) -> str:
        return "box" if self.box is not None else "tag"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks; two empty masks agree perfectly (1.0)."""
    a = np.asarray(a, bool)
    b = np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {a.shape} vs {b.shape}")
    return mask_iou(a, b)


def candidate_techniques(variant: str, ts: Iterable[float] = DEFAULT_TS) -> tuple[Technique, ...]:
    """The same variant at every threshold in ``ts`` (naked GrabCut has no threshold: itself)."""
    if variant == "grabcut":
        return (Technique("grabcut"),)
    return tuple(Technique(variant, float(t)) for t in ts)


def score_candidates(
    seg: Segmenter, prompt: Prompt, corrected: np.ndarray, candidates: Sequence[Technique]
) -> dict[Technique, float]:
    """IoU of each candidate's mask with ``corrected``; ``seg`` must hold the image already.

    For a box prompt the correction is compared inside the whole image (the prediction is
    confined to the box, so pixels the annotator added outside it count against every
    candidate alike).
    """
    h, w = seg.image.shape[:2]
    corrected = np.asarray(corrected, bool)
    if corrected.shape != (h, w):
        raise ValueError(f"corrected mask {corrected.shape} does not match the image {(h, w)}")
    out: dict[Technique, float] = {}
    for tech in candidates:
        if prompt.box is not None:
            res = seg.segment_box(prompt.box, prompt.voc_class, tech)
        else:
            res = seg.segment_class(prompt.voc_class, tech, others=prompt.others)
        out[tech] = iou(res.mask, corrected)
    return out


def choose_technique(
    scores: Mapping[str, tuple[float, int]], min_count: int, default: str | None = None
) -> tuple[str, float, int] | None:
    """Pick the technique (label) with the best mean IoU over at least ``min_count`` corrections.

    ``scores`` maps technique label -> (mean IoU, number of corrections). Ties keep ``default``
    if it is among the best, else the first label in sorted order. None if no technique has
    enough corrections yet. Another technique replaces ``default`` only if it is better by
    ``MIN_GAIN``.
    """
    eligible = {k: v for k, v in scores.items() if v[1] >= min_count}
    if not eligible:
        return None
    best = max(m for m, _ in eligible.values())
    if default in eligible and eligible[default][0] >= best - MIN_GAIN:
        return default, eligible[default][0], eligible[default][1]
    tied = sorted(k for k, (m, _) in eligible.items() if m >= best - 1e-12)
    pick = default if default in tied else tied[0]
    return pick, eligible[pick][0], eligible[pick][1]
