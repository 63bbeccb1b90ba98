"""Coarse-to-fine re-cut of a featcut box answer: the boundary band (and the background pockets
inside the mask) re-cut at a finer resolution, everything else kept as the coarse cut gave it.

The core cuts a box window at ``max_side`` px (160), so a chair's legs, a bicycle's frame and an
aeroplane's wing tips are 1-3 working pixels wide and the Potts term fills the gaps between them
(too-big masks were 175 of the 225 box failures, README "The feature cut"). Here:

1. The window at the fine resolution (its own, capped at ``fine_side``).
2. Colour GMMs (model/graphcut.py, GrabCut's model, on z-scored Lab) fitted on the coarse
   answer's confident parts: its interior and its exterior, each farther than the band from the
   coarse boundary.
3. The free pixels: the band around the coarse boundary, plus pockets - pixels inside the coarse
   mask whose colour the fitted models call background by more than ``pocket`` nats.
4. Contrast-sensitive 8-neighbour Potts at the fine resolution; every other pixel is fixed to the
   coarse label; exact min-cut (model/graphcut.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .graphcut import fit_gmm, gmm_loglik, min_cut, potts_weights
from .techniques import GC_BGD, GC_FGD

FIT_SAMPLES = 4096  # each side's GMM is fitted on a regular subsample of its confident pixels


@dataclass(frozen=True)
class RefineParams:
    fine_side: int = 400  # the re-cut's longer side (never above the window's own)
    band: float = 2.0  # half-width of the free band, in coarse working pixels
    pocket: float | None = 2.0  # nats of background log-odds that free a pixel inside the mask (None: band only)
    lam: float = 4.0  # Potts weight at the fine resolution
    components: int = 5
    rounds: int = 1  # fit + cut rounds


def _zscore(f: np.ndarray) -> np.ndarray:
    flat = f.reshape(-1, f.shape[-1])
    sd = flat.std(axis=0)
    return ((f - flat.mean(axis=0)) / np.where(sd > 1e-6, sd, 1.0)).astype(np.float32)


def _sample(a: np.ndarray, n: int) -> np.ndarray:
    step = max(1, len(a) // n)
    return a[::step]


def refine(image: np.ndarray, init: np.ndarray, mask: np.ndarray, coarse_side: int, p: RefineParams) -> np.ndarray:
    """The coarse ``mask`` (h, w bool, at the window's full size) re-cut near its boundary.

    ``image`` (h, w, 3) uint8 RGB and ``init`` (h, w) 4-valued GrabCut labels of the window at
    full size (GC_BGD outside the box); ``coarse_side`` the longer side the coarse cut ran at.
    Returns (h, w) bool; hard labels of ``init`` stay hard.
    """
    h, w = mask.shape
    if not mask.any() or mask.all():
        return mask
    s = min(1.0, p.fine_side / max(h, w))
    size = (max(1, round(w * s)), max(1, round(h * s)))
    img = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if s < 1 else image
    lab = _zscore(cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB))
    lab_raw = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    ini = cv2.resize(init, size, interpolation=cv2.INTER_NEAREST) if s < 1 else init
    m = (cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0) if s < 1 else mask.copy()
    hard_bg = ini == GC_BGD
    hard_fg = ini == GC_FGD
    coarse_px = max(size) / max(1, coarse_side)  # one coarse working pixel, in fine pixels
    b = max(1.0, p.band * coarse_px)
    pair = potts_weights(lab_raw, p.lam)
    for _ in range(max(1, p.rounds)):
        mu8 = m.astype(np.uint8)
        d_in = cv2.distanceTransform(mu8, cv2.DIST_L2, 3)
        d_out = cv2.distanceTransform(1 - mu8, cv2.DIST_L2, 3)
        sure_fg = d_in > b
        sure_bg = d_out > b
        if np.count_nonzero(sure_fg) < 20 * p.components or np.count_nonzero(sure_bg) < 20 * p.components:
            return _back(m, mask, init, s)
        fx = _sample(lab[sure_fg], FIT_SAMPLES)
        bx = _sample(lab[sure_bg], FIT_SAMPLES)
        fg_m = fit_gmm(fx, np.ones(len(fx)), p.components)
        bg_m = fit_gmm(bx, np.ones(len(bx)), p.components)
        z = np.clip(gmm_loglik(lab, fg_m) - gmm_loglik(lab, bg_m), -30, 30)
        free = (m & (d_in <= b)) | (~m & (d_out <= b))  # the band, both sides of the coarse boundary
        if p.pocket is not None:
            free |= m & (z < -p.pocket)
        cost_fg = np.logaddexp(0.0, -z)
        cost_bg = np.logaddexp(0.0, z)
        fix_fg = (hard_fg | (m & ~free)) & ~hard_bg
        fix_bg = hard_bg | (~m & ~free)
        m = min_cut(cost_fg, cost_bg, pair, fix_fg, fix_bg)
    return _back(m, mask, init, s)


def _back(m: np.ndarray, mask: np.ndarray, init: np.ndarray, s: float) -> np.ndarray:
    h, w = mask.shape
    if s < 1:
        m = cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR) > 0.5
    m = m.copy()
    m[init == GC_FGD] = True
    m[init == GC_BGD] = False
    return m


__all__ = ["RefineParams", "refine"]
