"""featcut: a box / click segmentation core whose per-pixel model sees what the CNN sees.

For one box (and the annotator's clicks so far, and the mask answered last):

1. **Window.** The box grown by ``margin`` (the background sample ring, as the ``default``
   GrabCut window), at most ``max_side`` px.
2. **Pixel features.** Lab colour, SqueezeNet fire3/fire5/fire9 hypercolumns (model/features.py,
   from the same CNN pass as the CAM) and the class CAM, z-scored over the window.
3. **Unary.** A weighted logistic regression fitted per image to what is known: the ring is
   background; inside the box the digitized CAM (F PF: CAM < ``cam_bg`` background, else
   foreground, CAM >= ``cam_hard`` definite) or, once there is one, the previous mask; click
   disks with a high weight. GrabCut's EM idea in feature space: cut, re-fit on the cut, cut.
4. **Clicks.** Disks are hard labels. A local "like the click" prior (a spatial Gaussian around
   the click times feature similarity to the click's 3x3 neighbourhood) pulls the pixels that
   look like the clicked part, near it, toward the click's label; near clicks the previous
   mask's samples are weighted down, so they do not argue against the correction.
5. **Pairwise + solver.** 8-neighbour contrast-sensitive Potts on Lab; exact min-cut by max-flow
   (model/graphcut.py). Components touching neither a positive click nor the previous mask
   are dropped (a click names one object).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Any

import cv2
import numpy as np

from .cut import Cut, CutInputs, CutReport
from .features import PixelFeatures
from .grabcut import run_grabcut
from .graphcut import (
    fit_gmm,
    fit_logistic,
    gmm_logliks,
    logistic_logits,
    min_cut,
    min_cut_and_relaxed,
    potts_weights,
    ring_geodesic,
)
from .prompts import split_click_overlap
from .techniques import GC_BGD, GC_FGD, GC_PR_BGD, GC_PR_FGD

MAX_FIT_SAMPLES = 2048  # the unary models are fitted on a regular subsample of the window (+ every click pixel)


@dataclass(frozen=True)
class FeatCutParams:
    """Every setting of the core. Values set before any run (see README / the experiment)."""

    max_side: int = 160  # working resolution: the window's longer side
    margin: float = 0.10  # window = box grown by this fraction of its size per side (>= 8 px)
    use_features: bool = True  # hypercolumns in the unary (False: Lab + CAM only)
    use_cam_feature: bool = False  # the CAM as one more feature (it already shapes the initial labels)
    cam_bg: float = 0.01  # F PF: CAM below this starts as background...
    # ...at or above this is definite foreground (None: a hint only, the Segmenter sends it as
    # probable foreground: FeatCutCut.hard_cam_peak). None, with em_iterations 1, lifts the box
    # mIoU 74.7 -> 75.3 on the 205 images (A 77.3 -> 77.8, B 72.4 -> 73.3) and cuts the core's CPU
    # per box by ~40% (README "The feature cut"): the CAM's peak, blurred at 1/16 resolution, forces
    # sky between wings and floor between legs into the mask. With the peak a hint, F PF's
    # threshold t no longer changes a box mask (F PB's and PF PB's still do), so the correction
    # loop's per-class t (model/adapt.py) keeps F PF as configured.
    cam_hard: float | None = None
    em_iterations: int = 1  # fit + cut rounds from the box; the first fit is on the CAM's labels
    click_em_iterations: int = 1  # rounds after a click (the previous mask is the start)
    ridge: float = 1.0
    lam: float = 4.0  # Potts weight (nats per unit edge)
    pairwise_features: float = 0.0  # weight of hypercolumn differences beside Lab in the pairwise term
    click_weight: float = 20.0  # LR sample weight of a click-disk pixel (a window pixel weighs 1)
    click_sigma: float = 0.25  # spatial sigma of the click prior, fraction of sqrt(box area)
    click_tau: float = 0.7  # feature distance scale of the prior (per z-scored dimension): 1 -> 0.7 -> 0.5,
    # kept where both halves stop improving at 90% (README "The feature cut")
    click_strength: float = 8.0  # nats added against the other label at the click's own look-alikes
    prev_near_click: float = 1.0  # previous-mask weight removed near clicks (x the click prior)
    # nats towards the previous answer's label, x (1 - the click prior): 0 / 0.5 / 2 / 4 / 8 on the
    # first 60 images, 2 the best cell on both halves (NoC@90 A 3.80, B 4.57; README "The feature cut")
    keep_far: float = 2.0
    cleanup: bool = True
    feature_dims_per_layer: int = 8  # model/features.py's DEFAULT_DIMS
    unary: str = "gmm"  # "lr": logistic regression on all features; "gmm": GMMs (GrabCut's model) on
    # Lab + the leading ``gmm_dims`` feature dimensions; "both": their log-odds summed
    gmm_components: int = 5
    gmm_dims: int = 0  # hypercolumn dimensions per layer the GMMs see beside Lab (0: colour only)
    gmm_weight: float = 1.0
    lr_weight: float = 1.0
    # The first fit from a box (GMMs and LR) sees as foreground only the pixels with CAM >= this
    # (None: the whole F PF foreground, CAM >= 0.01, nearly all of the box): the foreground model
    # then learns "like the CAM's core" rather than "like anything in the box", so background
    # inside the box is no longer half of it (too-big masks were 36 of the 41 failures, README).
    # The cut still starts from F PF; later EM rounds re-fit on the whole cut.
    fit_fg_cam: float | None = 0.3
    # EM rounds of each GMM fit in a second-opinion cut, whose only use is the score's agreement
    # (None: graphcut.fit_gmm's 4, as in the mask's own cut). 0: the components stay the quantile
    # slices along the leading direction, one M-step: with the featcut preset's score_max_side 48,
    # half the second opinion's CPU and a score that ranks boxes better on both halves (README "Speed").
    score_gmm_iterations: int | None = 0
    # Ring connectivity prior of a box's first answer (0: off): nats against foreground of
    # geo_weight * exp(-d / geo_scale), d the pixel's geodesic distance from the window's ring
    # (outside the box) over steps costing their Lab difference less geo_free (graphcut.ring_geodesic).
    # Background inside a box is mostly joined to the background outside it by a smooth path (sky
    # between wings, floor between chair legs); the colour models alone cannot say so when the CAM's
    # core holds those colours. Alone it leaks where an object meets background of its own colour at
    # a box side (bottles, tables, sofas: box mIoU 75.3 -> 74.9), so it is served with its guard:
    geo_weight: float = 2.0
    geo_scale: float = 5.0
    geo_free: float = 2.0
    # The ring's answer is kept unless it took out more than this share of the answer without it
    # (then that one is served): holes between wings and legs are small, a leak takes half a sofa.
    # 0.1 / 0.2 / 0.3 / 0.4 / 0.5 / 0.7 on the 205 images: 75.6 / 75.8 / 76.1 / 76.0 / 75.5 / 75.6
    # (A 78.1 / 78.2 / 78.4 / 78.5 / 77.8 / 77.7, B 73.7 / 73.9 / 74.2 / 74.0 / 74.1 / 74.2) against
    # 75.3 (77.8 / 73.3) without the prior: 0.3, the middle of the plateau (README "The feature cut").
    # 1.0: no guard.
    geo_max_share: float = 0.3
    # The ring prior's weight in the answer recorded beside the core's for every correction, which
    # a learned head serves, unguarded, for the classes it suits (model/head.py ring_head).
    learned_geo_weight: float = 2.0
    # The prior and its guard in every click's re-cut of a box answer too, from the ring alone. On the
    # 579 boxes' clicks: NoC@85 3.02 -> 2.92 (A 2.43 -> 2.33, B 3.69 -> 3.62), NoC@90 4.30 -> 4.21, never
    # at 85 / 90% 13 / 27 -> 9 / 20 (README "The feature cut" (21)).
    geo_clicks: bool = True
    extra: dict = field(default_factory=dict, compare=False)  # experiment-only switches


@dataclass
class Prompt:
    """What the annotator gave for one object, in full-image pixels (experiments' entry point)."""

    box: tuple[int, int, int, int]  # x0, y0, x1, y1 (half-open, clipped)
    positive_points: tuple[tuple[float, float], ...] = ()
    negative_points: tuple[tuple[float, float], ...] = ()
    positive_mask: np.ndarray | None = None  # (H, W) bool rasterized disks / strokes
    negative_mask: np.ndarray | None = None
    previous: np.ndarray | None = None  # (H, W) bool, the mask answered last


def grow(box: tuple[int, int, int, int], margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The engine's window around a box: grown by ``margin`` of its size per side, >= 8 px."""
    x0, y0, x1, y1 = box
    mx = max(8, int(round(margin * (x1 - x0))))
    my = max(8, int(round(margin * (y1 - y0))))
    return max(0, x0 - mx), max(0, y0 - my), min(width, x1 + mx), min(height, y1 + my)


def widen(
    box: tuple[int, int, int, int], positive_points: tuple[tuple[float, float], ...], width: int, height: int
) -> tuple[int, int, int, int]:
    """The box grown to hold every positive click: a positive click outside the box says the
    object is larger than drawn (else the annotator could click there forever to no effect)."""
    x0, y0, x1, y1 = box
    for x, y in positive_points:
        if 0 <= x < width and 0 <= y < height:
            x0, y0, x1, y1 = min(x0, int(x)), min(y0, int(y)), max(x1, int(x) + 1), max(y1, int(y) + 1)
    return x0, y0, x1, y1


# Where a click-only prompt's object lies: the class CAM at half its max. The CAM paper's box
# rule (20%, Zhou et al. 2016) gave regions spanning most of the image with SqueezeNet's coarse
# CAM (first-click IoU on images 8-30 of the split, 68 objects: README "The feature cut").
CLICK_CAM_LEVEL = 0.5


def click_region(positive: np.ndarray, cam: np.ndarray | None, level: float = CLICK_CAM_LEVEL) -> np.ndarray:
    """The class CAM's regions above ``level`` of its max that hold a positive seed (the CAM
    paper's localisation rule): where a click-only prompt's object probably lies."""
    if cam is None or not positive.any():
        return np.zeros(positive.shape, bool)
    _, comp = cv2.connectedComponents((cam >= level).astype(np.uint8), connectivity=8)
    keep = np.unique(comp[positive])
    return np.isin(comp, keep[keep > 0])


def click_window(positive: np.ndarray, region: np.ndarray, previous: np.ndarray | None = None) -> tuple[int, int, int, int]:
    """The window (x0, y0, x1, y1, half-open) a click-only prompt is cut in, in image pixels.

    Without a box the object's extent comes from what is known: the positive seeds, the previous
    mask (the object answered so far) and the CAM's ``region`` (:func:`click_region`). With
    neither of the last two, the whole image. Grown by a quarter of its size per side: no
    annotator drew it, so the object may reach past where the CAM fades.
    """
    h, w = positive.shape
    known = positive | region
    if previous is not None:
        known = known | previous
    if not (region.any() or (previous is not None and previous.any())):
        return 0, 0, w, h
    ys, xs = np.nonzero(known)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    gx, gy = (x1 - x0) // 4, (y1 - y0) // 4
    # Not snapped to a coarse grid (to reuse a window's features across clicks): 1/16 of the image
    # cost 0.2-2 clicks at 90% on both halves of a slice for 4-8% of CPU per click (README).
    return max(0, x0 - gx), max(0, y0 - gy), min(w, x1 + gx), min(h, y1 + gy)


def continues(previous: np.ndarray, positive: np.ndarray) -> bool:
    """Whether clicks refine ``previous`` rather than name another object: some positive seed lies
    within the previous mask's bounding box grown by its own size per side (a click on a missed
    body next to a found face), or there is no positive seed (negative clicks only)."""
    if not previous.any():
        return False
    if not positive.any():
        return True
    ys, xs = np.nonzero(previous)
    bw, bh = int(xs.max()) - int(xs.min()) + 1, int(ys.max()) - int(ys.min()) + 1
    py, px = np.nonzero(positive)
    near = (px >= xs.min() - bw) & (px <= xs.max() + bw) & (py >= ys.min() - bh) & (py <= ys.max() + bh)
    return bool(near.any())


def border_joined(mask: np.ndarray) -> np.ndarray:
    """The pixels of ``mask`` (h, w bool) in its 8-connected parts that touch the array's border:
    of a window's hard background, the ring outside the box, without the disks of negative clicks
    inside it (a disk touching the ring joins it)."""
    _, comp = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    edge = np.unique(np.concatenate([comp[0], comp[-1], comp[:, 0], comp[:, -1]]))
    return np.isin(comp, edge[edge > 0])


def _zscore(f: np.ndarray) -> np.ndarray:
    flat = f.reshape(-1, f.shape[-1])
    sd = flat.std(axis=0)
    return ((f - flat.mean(axis=0)) / np.where(sd > 1e-6, sd, 1.0)).astype(np.float32)


class FeatCut:
    """The featcut core: :meth:`cut` of one window (the engine's Cut seam), cheap on repeats.

    Per-window inputs (Lab, z-scored features, Potts weights) and per-click priors are kept for
    the clicks that follow on the same window: an interactive session re-cuts one window many
    times. Keyed by the window's pixels, so a stale entry can never be used for another image.
    """

    def __init__(self, params: FeatCutParams | None = None) -> None:
        self.p = params or FeatCutParams()
        self._windows: dict[tuple, tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray | None]] = {}
        self._priors: dict[tuple, np.ndarray] = {}
        self._rings: dict[tuple, np.ndarray] = {}
        self._lock = threading.Lock()

    def reads_features(self, points: tuple, head: Any) -> bool:
        """Whether a cut with these clicks and head reads the hypercolumns: the click prior,
        the logistic regression, feature columns in the GMMs or the pairwise term, and a learned
        head do; the box answer of colour GMMs does not, and then they are not even resampled."""
        p = self.p
        return p.use_features and (
            bool(points)
            or head is not None
            or p.unary in ("lr", "both")
            or (p.unary in ("gmm", "both") and p.gmm_dims > 0)
            or p.pairwise_features > 0
        )

    def _inputs(self, image: np.ndarray, features: np.ndarray | None) -> tuple[tuple, np.ndarray, list[np.ndarray]]:
        """(cache key, z-scored Lab + hypercolumns, Potts weights) of a window."""
        use = self.p.use_features and features is not None
        fkey: tuple | None = None
        if use:
            # A read-only array is PixelFeatures.window's cached answer, the same object at every
            # click on this window: its identity is its key (the entry holds it, so the id cannot be
            # reused meanwhile). Hashing its bytes cost 7 ms a click; other arrays are still hashed.
            fkey = ("id", id(features)) if not features.flags.writeable else ("bytes", hash(features.tobytes()))  # type: ignore[union-attr]
        key = (image.shape, hash(image.tobytes()), fkey)
        hit = self._windows.get(key)
        if hit is not None and (fkey is None or fkey[0] != "id" or hit[3] is features):
            return key, hit[1], hit[2]
        lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
        fz = _zscore(np.concatenate([lab, features], axis=2) if use else lab)
        guide = lab
        if self.p.pairwise_features > 0 and fz.shape[2] > 3:
            guide = np.concatenate([fz[:, :, :3], self.p.pairwise_features * fz[:, :, 3:]], axis=2)
        entry = (lab, fz, potts_weights(guide, self.p.lam), features)
        with self._lock:
            if len(self._windows) > 16:
                self._windows.clear()
                self._priors.clear()
                self._rings.clear()
            self._windows[key] = entry
        return key, fz, entry[2]

    def _ring_term(self, key: tuple, image: np.ndarray, ring: np.ndarray) -> np.ndarray:
        """exp(-d / geo_scale) off ``ring`` (h, w bool, the hard background outside the box), d the
        geodesic distance from it; kept per window and ring, so the clicks that follow a box answer
        (they leave the ring as it was) reuse its search."""
        p = self.p
        gkey = (image.shape, key[1], hash(np.packbits(ring).tobytes()))  # not the features: colour only
        term = self._rings.get(gkey)
        if term is None:
            # Past 6 scales the prior is under 2 e^-6 = 0.005 nats: the search stops there (inf -> 0).
            geo = ring_geodesic(image, ring, p.geo_free, limit=6.0 * p.geo_scale)
            term = (np.exp(-geo / p.geo_scale) * ~ring).astype(np.float32)
            term.setflags(write=False)
            with self._lock:
                self._rings[gkey] = term
        return term

    def cut(
        self,
        image: np.ndarray,
        init: np.ndarray,
        cam: np.ndarray | None = None,
        features: np.ndarray | None = None,
        previous: np.ndarray | None = None,
        points: tuple[tuple[float, float, bool], ...] = (),
        head: Any = None,
        head_features: np.ndarray | None = None,
        keep_previous: bool = True,
        report: CutReport | None = None,
        score: bool = False,
    ) -> np.ndarray:
        """Bool mask of one window at the working size.

        ``image`` (h, w, 3) uint8 RGB; ``init`` (h, w) 4-valued as the engine builds it (GC_BGD:
        outside the box and negative clicks, GC_FGD: CAM's peak and positive clicks, PR_FGD /
        PR_BGD: the rest of the box); ``cam`` (h, w) in [0, 1] or None; ``features`` (h, w, d)
        hypercolumns or None; ``previous`` (h, w) in [0, 1], the mask answered last, or None;
        ``points``: the clicks (x, y, positive) in window pixels, newest last; ``report``, if
        given, receives the answer's confidence (CutReport); ``score``: the cut is a second
        opinion (``score_gmm_iterations``).
        """
        p = self.p
        h, w = init.shape
        key, fz, pair = self._inputs(image, features)
        f = fz
        cam_key = None
        if cam is not None and p.use_cam_feature:
            f = np.concatenate([fz, _zscore(cam[:, :, None].astype(np.float32))], axis=2)
            cam_key = hash(cam.tobytes())
        d = f.shape[2]
        hard_bg = init == GC_BGD
        hard_fg = init == GC_FGD
        start = hard_fg | (init == GC_PR_FGD)
        inbox = ~hard_bg
        # Click disks at the working size: the engine's nearest-neighbour downscale can drop a
        # small disk, so each click's own 3x3 pixels are set again.
        pos, neg = np.zeros((h, w), bool), np.zeros((h, w), bool)
        for x, y, positive in points:
            cx, cy = int(x), int(y)
            if 0 <= cx < w and 0 <= cy < h:
                (pos if positive else neg)[max(0, cy - 1) : cy + 2, max(0, cx - 1) : cx + 2] = True
        split_click_overlap(pos, neg, [(x, y) for x, y, s in points if s], [(x, y) for x, y, s in points if not s], 2)
        hard_fg = (hard_fg | pos) & ~neg
        hard_bg = hard_bg | neg
        clicked = pos | neg

        # Click prior: spatial Gaussian x feature similarity to the click's 3x3 neighbourhood.
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        sigma = max(2.0, p.click_sigma * float(np.sqrt(inbox.sum())))
        prior = {True: np.zeros((h, w), np.float32), False: np.zeros((h, w), np.float32)}
        for x, y, positive in points:
            if not (0 <= x < w and 0 <= y < h):
                continue
            pkey = (key, cam_key, float(x), float(y))
            g = self._priors.get(pkey)
            if g is None:  # a click's prior never changes: computed once per click, not per answer
                ci, cj = int(y), int(x)
                fc = f[max(0, ci - 1) : ci + 2, max(0, cj - 1) : cj + 2].reshape(-1, d).mean(axis=0)
                spatial = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
                sim = np.exp(-((f - fc) ** 2).sum(axis=2) / (2 * p.click_tau**2 * d))
                g = (spatial * sim).astype(np.float32)
                with self._lock:
                    self._priors[pkey] = g
            np.maximum(prior[positive], g, out=prior[positive])
        near_click = np.maximum(prior[True], prior[False])

        prev = previous > 0.5 if previous is not None else None
        if prev is not None:
            target = prev & inbox
            iterations = p.click_em_iterations
        else:
            target = start & inbox
            iterations = p.em_iterations
        if p.cam_hard is None or prev is not None:
            # The CAM's peak is a hint for the first answer, not a constraint; brush strokes and
            # click disks (the rest of GC_FGD) stay hard.
            peak = cam >= (p.cam_hard if p.cam_hard is not None else 0.7) if cam is not None else np.zeros((h, w), bool)
            hard_fg = ((init == GC_FGD) & ~peak | pos) & ~neg
        weight = np.ones((h, w), np.float32)
        if prev is not None:
            weight = weight * np.clip(1.0 - p.prev_near_click * near_click, 0.0, 1.0)
        weight[clicked] = p.click_weight
        step = max(1, int(np.ceil(np.sqrt(h * w / MAX_FIT_SAMPLES))))
        sub = (slice(None, None, step), slice(None, None, step))
        # GMM columns: Lab, the first gmm_dims of each hypercolumn layer, the CAM.
        nfeat = fz.shape[2] - 3
        per = p.feature_dims_per_layer
        gmm_cols = [0, 1, 2] + [3 + b * per + j for b in range(nfeat // per) for j in range(min(p.gmm_dims, per))]
        if f.shape[2] > fz.shape[2]:
            gmm_cols.append(f.shape[2] - 1)
        unsure = None
        if prev is None and cam is not None and p.fit_fg_cam is not None:
            unsure = inbox & (cam >= p.cam_bg) & (cam < p.fit_fg_cam) & ~clicked
        ring_prior: np.ndarray | float = 0.0
        ring_term: np.ndarray | None = None  # exp(-d / geo_scale) in the box, d from the ring
        first = prev is None and not points  # a box's first answer: the only one a learned head re-cuts
        want_ring = first and head is not None and head.wants_ring and p.learned_geo_weight > 0
        # The ring prior shapes a box's answers: its first and, with geo_clicks, every click's re-cut
        # (keep_previous: from a box, whose outside is background; not clicks alone, whose window is a guess).
        ringable = first or (p.geo_clicks and prev is not None and bool(points) and keep_previous)
        if ringable and (p.geo_weight > 0 or want_ring):
            # The ring alone, the known background, not the negative clicks' disks too (NoC@85 2.92 vs
            # 2.93, never at 90% 20 vs 23; README "The feature cut" (21)).
            ring = border_joined(hard_bg) if any(not positive for _, _, positive in points) else hard_bg
            ring_term = self._ring_term(key, image, ring) * ~hard_bg
            ring_prior = p.geo_weight * ring_term
        # The guard of the ring prior: the answer without it, beside the answer with it (below).
        guard = ringable and p.geo_weight > 0 and p.geo_max_share < 1.0 and isinstance(ring_prior, np.ndarray)
        without: np.ndarray | None = None
        mask = target
        for it in range(max(1, iterations)):
            y = (target | pos) & ~neg
            xs, ys, ws = f[sub].reshape(-1, d), y[sub].ravel(), weight[sub].ravel()
            wl = ws if unsure is None or it > 0 else np.where(unsure[sub].ravel(), 0.0, ws)
            if clicked.any():  # every click pixel is a sample, whatever the subsample grid
                xs = np.concatenate([xs, f[clicked]])
                ys = np.concatenate([ys, y[clicked]])
                ws = np.concatenate([ws, weight[clicked]])
                wl = np.concatenate([wl, weight[clicked]])
            z = np.zeros((h, w), np.float32)
            if p.unary in ("lr", "both"):
                z += p.lr_weight * logistic_logits(f, fit_logistic(xs, ys, wl, ridge=p.ridge))
            if p.unary in ("gmm", "both") and ys.any() and not ys.all():
                g = f[:, :, gmm_cols]
                gs = xs[:, gmm_cols]
                fit_fg = ys
                if unsure is not None and it == 0 and np.count_nonzero(ys & (wl > 0)) >= 10 * len(gmm_cols):
                    fit_fg = ys & (wl > 0)  # the first fit: the CAM's core only (if it has enough samples)
                em = {} if not score or p.score_gmm_iterations is None else {"iterations": p.score_gmm_iterations}
                fg_m = fit_gmm(gs[fit_fg], ws[fit_fg], p.gmm_components, **em)
                bg_m = fit_gmm(gs[~ys], ws[~ys], p.gmm_components, **em)
                fg_ll, bg_ll = gmm_logliks(g, fg_m, bg_m)
                z += p.gmm_weight * np.clip(fg_ll - bg_ll, -30, 30)
            cost_fg = np.logaddexp(0.0, -z) + p.click_strength * prior[False] + ring_prior
            cost_bg = np.logaddexp(0.0, z) + p.click_strength * prior[True]
            if prev is not None and keep_previous and p.keep_far > 0:
                # A click re-fits the colour models of the whole window, which could flip regions the
                # annotator never pointed at (a click made 9% of answers worse): pixels unlike every
                # click, or far from them, lean towards the label the previous answer gave them.
                far = p.keep_far * np.clip(1.0 - near_click, 0.0, 1.0)
                cost_fg = cost_fg + far * ~prev
                cost_bg = cost_bg + far * prev
            if guard and it == max(1, iterations) - 1:
                # the guard's second opinion (the same unary of the last EM round without the prior)
                # from the same graph; the served em_iterations is 1, the box's only round
                mask, without = min_cut_and_relaxed(cost_fg, cost_bg, pair, hard_fg, hard_bg, np.asarray(ring_prior))
            else:
                mask = min_cut(cost_fg, cost_bg, pair, hard_fg, hard_bg)
            target = mask & inbox
        ringed = mask  # the answer with the ring prior at geo_weight, unguarded
        # min_cut is monotone in the unary: the ring's answer is a subset of the answer without it
        if without is not None and np.count_nonzero(without & ~mask) > p.geo_max_share * np.count_nonzero(without):
            mask = without
        if head is not None and first:  # a learned head re-cuts a box answer (model/head.py)
            ring = None
            if want_ring and ring_term is not None:  # the same unary with the ring prior at the learned weight
                ring = (
                    ringed
                    if p.learned_geo_weight == p.geo_weight
                    else min_cut(cost_fg - ring_prior + p.learned_geo_weight * ring_term, cost_bg, pair, hard_fg, hard_bg)
                )
            mask = head.refine(image, init, cam, fz, head_features, z, mask, pair, ring)
        if p.cleanup and (prev is not None or pos.any()):
            anchor = pos | (prev if prev is not None else np.zeros_like(pos))
            _, comp = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
            keep = np.unique(comp[anchor & mask])
            mask = np.isin(comp, keep[keep > 0])
        if report is not None:
            kept = mask & inbox
            report.confidence = float(np.mean(1.0 / (1.0 + np.exp(-np.clip(z[kept], -30, 30))))) if kept.any() else 0.0
        return mask


class FeatCutCut(Cut):
    """featcut behind the engine's cut seam (``EngineConfig(cut="featcut")``).

    Box cuts arrive with ``CutInputs.features`` (the Segmenter passes them for boxes only) and
    get the featcut core. Cuts without features - tags and clicks without a box - run OpenCV
    GrabCut exactly as the ``default`` configuration does, so the tag task keeps its measured
    behaviour (model/tagprop.py is the tag work).
    """

    needs_features = True  # the Segmenter computes hypercolumns in set_image for this cut

    def __init__(self, params: FeatCutParams | None = None) -> None:
        self.core = FeatCut(params)

    @property
    def version_key(self) -> str:
        p = self.core.p  # every setting but the experiments' switches; floats exact (repr)
        return "featcut(" + ",".join(f"{f.name}={getattr(p, f.name)!r}" for f in fields(p) if f.name != "extra") + ")"

    @property
    def hard_cam_peak(self) -> bool:
        return self.core.p.cam_hard is not None

    def cut(self, image: np.ndarray, init: np.ndarray, extras: CutInputs | None = None) -> np.ndarray:
        if extras is None or extras.features is None:
            return run_grabcut(image, init, 1)
        feats = None  # the same mask either way where the core does not read them (reads_features)
        if self.core.reads_features(extras.points, extras.head):
            f = extras.features
            feats = f if isinstance(f, np.ndarray) else f.window(None, image.shape[1::-1])
        hf = extras.head_features
        hf = hf.window(None, image.shape[1::-1]) if hf is not None and not isinstance(hf, np.ndarray) else hf
        return self.core.cut(
            image,
            init,
            extras.cam,
            feats,
            extras.previous,
            extras.points,
            extras.head,
            hf,
            extras.keep_previous,
            extras.report,
            extras.score,
        )


def segment(
    core: FeatCut,
    image: np.ndarray,
    pf: PixelFeatures | None,
    prompt: Prompt,
    cam: np.ndarray | None,
    cam_thresholds: tuple[float, float] = (0.01, 0.7),
) -> np.ndarray:
    """A full-image mask the way the engine's box path makes it (experiments, before the seam).

    The initial mask is the engine's: GC_BGD outside the box, F PF inside (CAM < t1 probable
    background, < t2 probable foreground, else definite; all probable foreground without a
    CAM), click disks hard inside the box. The window is the box grown by ``params.margin``, cut
    at ``params.max_side`` (init by nearest neighbour, the rest bilinear, as model/cut.py's windowed_cut
    does), upsampled with the hard labels kept hard.
    """
    h, w = image.shape[:2]
    x0, y0, x1, y1 = widen(prompt.box, prompt.positive_points, w, h)
    init = np.full((h, w), GC_BGD, np.uint8)
    if cam is None:
        init[y0:y1, x0:x1] = GC_PR_FGD
    else:
        c = cam[y0:y1, x0:x1]
        # Once the annotator has clicked, clicks (not the CAM) decide what is certain: the CAM's
        # peak would otherwise stay foreground however often a negative click lands on it.
        # With cam_hard None the peak is a hint for the box answer too (the engine's Segmenter
        # demotes it the same way, FeatCutCut.hard_cam_peak).
        clicked = prompt.previous is not None or prompt.positive_points or prompt.negative_points
        peak = GC_PR_FGD if clicked or core.p.cam_hard is None else GC_FGD
        inside = np.where(c < cam_thresholds[0], GC_PR_BGD, np.where(c < cam_thresholds[1], GC_PR_FGD, peak)).astype(np.uint8)
        init[y0:y1, x0:x1] = inside
    in_box = np.zeros((h, w), bool)
    in_box[y0:y1, x0:x1] = True
    if prompt.positive_mask is not None:
        init[prompt.positive_mask & in_box] = GC_FGD
    if prompt.negative_mask is not None:
        init[prompt.negative_mask & in_box] = GC_BGD
    margin, max_side = core.p.margin, core.p.max_side
    win = grow((x0, y0, x1, y1), margin, w, h)
    wx0, wy0, wx1, wy1 = win
    sub = init[wy0:wy1, wx0:wx1]
    if not np.any((sub == GC_BGD) | (sub == GC_PR_BGD)):  # a whole-image box: the border is background
        r = max(1, int(round(0.02 * min(sub.shape))))
        for sl in (np.s_[:r, :], np.s_[-r:, :], np.s_[:, :r], np.s_[:, -r:]):
            region = sub[sl]
            region[region != GC_FGD] = GC_PR_BGD
    sh, sw = sub.shape
    s = min(1.0, max_side / max(sh, sw))
    size = (max(1, round(sw * s)), max(1, round(sh * s)))
    small = lambda a: cv2.resize(a, size, interpolation=cv2.INTER_LINEAR)  # noqa: E731
    sx, sy = size[0] / sw, size[1] / sh
    pts = tuple(((x - wx0) * sx, (y - wy0) * sy, True) for x, y in prompt.positive_points if x0 <= x < x1 and y0 <= y < y1)
    pts += tuple(((x - wx0) * sx, (y - wy0) * sy, False) for x, y in prompt.negative_points if x0 <= x < x1 and y0 <= y < y1)
    m = core.cut(
        cv2.resize(image[wy0:wy1, wx0:wx1], size, interpolation=cv2.INTER_AREA),
        cv2.resize(sub, size, interpolation=cv2.INTER_NEAREST),
        None if cam is None else small(cam[wy0:wy1, wx0:wx1]),
        None if pf is None else pf.window(win, size),
        None if prompt.previous is None else small(prompt.previous[wy0:wy1, wx0:wx1].astype(np.float32)),
        pts,
    )
    big = cv2.resize(m.astype(np.float32), (sw, sh), interpolation=cv2.INTER_LINEAR) > 0.5
    big[sub == GC_FGD] = True
    big[sub == GC_BGD] = False
    out = np.zeros((h, w), bool)
    out[wy0:wy1, wx0:wx1] = big
    out &= in_box
    return out


__all__ = [
    "FeatCut",
    "FeatCutCut",
    "FeatCutParams",
    "Prompt",
    "click_region",
    "click_window",
    "continues",
    "grow",
    "segment",
    "widen",
]
