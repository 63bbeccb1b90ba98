"""OpenCV GrabCut from a 4-valued initial mask, with its failure modes turned into defined results.

cv2.grabCut asserts when the initial mask has no background sample or no foreground sample
(its GMMs are fitted with k-means on each side), so callers check :func:`has_both_sides`
first and decide what the result should be instead.
"""

from __future__ import annotations

import cv2
import numpy as np

from .techniques import GC_BGD, GC_FGD, GC_PR_BGD, GC_PR_FGD

# k-means inside GrabCut needs at least as many samples as GMM components (5) on each side; a
# few more keep the covariance estimates from degenerating.
MIN_SAMPLES_PER_SIDE = 16
RNG_SEED = 0


def foreground(mask: np.ndarray) -> np.ndarray:
    """Binary foreground of a GrabCut mask (definite or probable foreground)."""
    return (mask == GC_FGD) | (mask == GC_PR_FGD)


def has_both_sides(mask: np.ndarray) -> bool:
    fg = int(np.count_nonzero(foreground(mask)))
    return fg >= MIN_SAMPLES_PER_SIDE and mask.size - fg >= MIN_SAMPLES_PER_SIDE


def add_border_background(mask: np.ndarray, frac: float = 0.02) -> np.ndarray:
    """Mark a thin ring along the image border as probable background (in place).

    Used when a box spans the whole image: the report's box task assumes the outside of the
    box is background, and with no outside the image border is the best available sample.
    """
    h, w = mask.shape
    r = max(1, int(round(frac * min(h, w))))
    for sl in (np.s_[:r, :], np.s_[h - r :, :], np.s_[:, :r], np.s_[:, w - r :]):
        region = mask[sl]
        region[region != GC_FGD] = GC_PR_BGD
    return mask


def run_grabcut(image_rgb: np.ndarray, init_mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """Run cv2.grabCut (GC_INIT_WITH_MASK) and return the binary foreground.

    The caller guarantees :func:`has_both_sides`. OpenCV's RNG is seeded so that the same input
    gives the same mask (GrabCut's k-means initialisation draws from it).
    """
    if not has_both_sides(init_mask):
        raise ValueError("GrabCut needs foreground and background samples in the initial mask")
    mask = np.ascontiguousarray(init_mask, dtype=np.uint8).copy()
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(RNG_SEED)
    # OpenCV wants BGR; GrabCut's colour model is symmetric in channel order, but keep it honest.
    bgr = np.ascontiguousarray(image_rgb[:, :, ::-1])
    # rect is unused with GC_INIT_WITH_MASK; opencv's stubs do not allow None for it (OpenCV does)
    cv2.grabCut(bgr, mask, None, bgd, fgd, int(iterations), cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]
    return foreground(mask)


__all__ = [
    "GC_BGD",
    "GC_FGD",
    "GC_PR_BGD",
    "GC_PR_FGD",
    "MIN_SAMPLES_PER_SIDE",
    "add_border_background",
    "foreground",
    "has_both_sides",
    "run_grabcut",
]
