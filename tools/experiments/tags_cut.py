"""Measured and dropped (tools/experiments/tags_prop.py ablation): the first version of
model/tagprop.py, kept so its figures reproduce.

tagprop: masks of every tagged class of an image in one multi-label cut over {background, tags}.

Why: today's class task cuts each tag on its own with GrabCut from the coarse CAM, and 80% of its
error is false positives (masks cover about twice the object). Here background is a label of
its own and the image's tags compete for every pixel:

1. **Scores.** Each tag's CAM (at the CNN's 1/16 resolution) is resampled to a grid at 1/``grid``
   of the CNN input and divided by its maximum; background starts as (1 - max tag score)^alpha
   (AffinityNet's background, Ahn & Kwak 2018), i.e. "no tag sees anything here".
2. **Propagation.** A random walk on a feature graph spreads the scores over each object's
   extent: affinity between grid cells within ``radius`` = cosine similarity of their L2-normalised
   SqueezeNet hypercolumns (fire3 + fire5, from the CAM's own pass), raised to ``beta``; the
   scores are multiplied ``steps`` times by the row-normalised affinity matrix. Nothing is
   trained: the affinity is the ImageNet network's own notion of "same stuff".
3. **Per-image models (EM).** Pixels where the propagated scores agree confidently are samples
   of their label; a one-vs-rest logistic model per label on reduced hypercolumns + Lab colour
   (model/graphcut.fit_logistic) gives each pixel a data term. Unary = -(log propagated score
   + ``model_weight`` x the model's log-odds).
4. **Multi-label cut.** Potts with GrabCut's contrast-sensitive weights on Lab at ``max_side`` px,
   minimised by alpha-expansion (Boykov, Veksler & Zabih 2001) with PyMaxflow; the label map is
   upsampled to the image (nearest).

Everything is deterministic (no random initialisation anywhere). A tag whose CAM is all zero
gets no score and so an empty mask; the caller reports it (fallback "no_cam").
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import maxflow  # type: ignore[import-untyped]
import numpy as np
import scipy.sparse as sp

from model.graphcut import OFFSETS, fit_logistic, logistic_logits, potts_weights

# the pieces this first version shares with model/tagprop.py unchanged (its transition differs:
# the figures of the README's ablation were measured with this file's own)
from model.tagprop import affinity_features, initial_scores, resize_maps

MAX_FIT_SAMPLES = 4096  # per-image models are fitted on a regular subsample of the grid


@dataclass(frozen=True)
class TagParams:
    """Every setting of the tag path; values chosen by the rules in /work/notes/tags-results.md."""

    grid: int = 8  # propagation grid: CNN-input pixels per cell (fire5's own stride)
    radius: int = 6  # affinity neighbourhood, in cells
    beta: float = 8.0  # affinity = cos^beta (AffinityNet's exponent)
    steps: int = 16  # random-walk steps
    alpha: float = 4.0  # background = (1 - max tag score)^alpha before propagation
    max_side: int = 160  # working resolution of the cut (longer side)
    model_weight: float = 1.0  # weight of the per-image logistic models in the unary (0: none)
    em_iterations: int = 1  # refits of the models on the cut's own labels
    confident: float = 0.5  # a pixel is a model sample when its best label's share exceeds this
    lam: float = 2.0  # Potts weight (nats per unit edge); 0: no pairwise term
    cycles: int = 2  # alpha-expansion sweeps over the labels


def transition(feat: np.ndarray, radius: int, beta: float) -> sp.csr_matrix:
    """Row-stochastic random-walk matrix over the grid cells of ``feat`` (d, h, w)."""
    _, h, w = feat.shape
    n = h * w
    idx = np.arange(n).reshape(h, w)
    rows, cols, vals = [], [], []
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx > radius * radius:
                continue
            y0, y1, x0, x1 = max(0, -dy), min(h, h - dy), max(0, -dx), min(w, w - dx)
            if y1 <= y0 or x1 <= x0:
                continue
            s = np.einsum("chw,chw->hw", feat[:, y0:y1, x0:x1], feat[:, y0 + dy : y1 + dy, x0 + dx : x1 + dx])
            rows.append(idx[y0:y1, x0:x1].ravel())
            cols.append(idx[y0 + dy : y1 + dy, x0 + dx : x1 + dx].ravel())
            vals.append(s.ravel().clip(min=0) ** beta)
    a = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    d = np.asarray(a.sum(1)).ravel()  # >= 1: every cell is its own neighbour with cos = 1
    return sp.diags(1.0 / np.maximum(d, 1e-12)) @ a


def propagate(scores: np.ndarray, feat: np.ndarray, params: TagParams) -> np.ndarray:
    """(L, h, w) scores, background first -> propagated, each divided by its maximum."""
    L, h, w = scores.shape
    p = transition(feat, params.radius, params.beta)
    v = scores.reshape(L, -1).T.astype(np.float64)
    for _ in range(params.steps):
        v = p @ v
    v = v / np.maximum(v.max(0, keepdims=True), 1e-12)
    return v.T.reshape(L, h, w).astype(np.float32)


def alpha_expansion(unary: np.ndarray, pairwise: list[np.ndarray], init: np.ndarray, cycles: int) -> np.ndarray:
    """Labels (h, w) approximately minimising sum unary[label] + Potts(pairwise), from ``init``.

    Each move lets every pixel keep its label or take label a; for the Potts metric the move's
    energy is submodular and max-flow solves it exactly (Boykov et al. 2001, with Kolmogorov &
    Zabih's construction of the pairwise terms)."""
    L, h, w = unary.shape
    lab = init.astype(np.int64).copy()
    rows, cols = np.mgrid[0:h, 0:w]
    for _ in range(cycles):
        changed = False
        for a in range(L):
            cur = unary[lab, rows, cols]
            c1 = unary[a].astype(np.float64).copy()  # cost of switching to a
            c0 = cur.astype(np.float64).copy()  # cost of keeping the label
            g = maxflow.Graph[float]()
            nodes = g.add_grid_nodes((h, w))
            for (dy, dx), wgt in zip(OFFSETS, pairwise, strict=True):
                ys, xs = slice(0, h - dy), slice(max(0, -dx), w - max(0, dx))
                ys2, xs2 = slice(dy, h), slice(max(0, dx), w - max(0, -dx))
                lp, lq, wq = lab[ys, xs], lab[ys2, xs2], wgt[ys, xs]
                e00 = wq * (lp != lq)
                e01 = wq * (lp != a)  # p keeps, q switches
                e10 = wq * (lq != a)  # p switches, q keeps
                # E = e00 + (e10 - e00) x_p + (0 - e10) x_q + (e01 + e10 - e00)(1 - x_p) x_q
                c1[ys, xs] += e10 - e00
                c0[ys, xs] += 0.0
                c1[ys2, xs2] -= e10
                cap = np.zeros((h, w))
                cap[ys, xs] = np.maximum(e01 + e10 - e00, 0.0)
                structure = np.zeros((3, 3))
                structure[1 + dy, 1 + dx] = 1.0
                g.add_grid_edges(nodes, weights=cap, structure=structure, symmetric=False)
            # x = 1 (switch) is the sink side: its cost goes on the source edge, and vice versa.
            m = np.minimum(c0, c1)
            g.add_grid_tedges(nodes, c1 - m, c0 - m)
            g.maxflow()
            switch = g.get_grid_segments(nodes) & (lab != a)
            if switch.any():
                lab[switch] = a
                changed = True
        if not changed:
            break
    return lab


def _fit_models(x: np.ndarray, lab: np.ndarray, weight: np.ndarray, L: int) -> np.ndarray:
    """(L, h, w) log-odds of one-vs-rest logistic models of each label on features x (h, w, d)."""
    h, w, d = x.shape
    flat, lf, wf = x.reshape(-1, d), lab.ravel(), weight.ravel()
    step = max(1, int(np.ceil(flat.shape[0] / MAX_FIT_SAMPLES)))
    xs, ls, ws = flat[::step], lf[::step], wf[::step]
    out = np.zeros((L, h, w), np.float32)
    for k in range(L):
        beta = fit_logistic(xs, (ls == k).astype(np.float64), ws)
        out[k] = logistic_logits(flat, beta).reshape(h, w)
    return out


def tag_scores(cnn_shape: tuple[int, int], cams: np.ndarray, aff_layers: list[np.ndarray], params: TagParams) -> np.ndarray:
    """(K + 1, gh, gw) propagated scores on the grid, background first, each in [0, 1]."""
    cnn_h, cnn_w = cnn_shape
    gsize = (max(2, int(np.ceil(cnn_w / params.grid))), max(2, int(np.ceil(cnn_h / params.grid))))
    s = initial_scores(cams, gsize, params.alpha)
    if params.steps > 0:
        s = propagate(s, affinity_features(aff_layers, gsize), params)
    return s


def segment_tags(
    image: np.ndarray,
    cnn_shape: tuple[int, int],
    cams: np.ndarray,
    aff_layers: list[np.ndarray],
    pixel_features: list[np.ndarray] | None,
    params: TagParams = TagParams(),
) -> np.ndarray:
    """Label map (H, W) int: 0 background, k = the k-th tag (1-based, ``cams`` order).

    ``image``: (H, W, 3) uint8 RGB; ``cams``: (K, h16, w16) raw CAMs of the tags at the CNN's
    resolution (from a pass on the image resized to the CNN input, so the maps span the image);
    ``aff_layers``: raw fire outputs of that pass for the affinity; ``pixel_features``: (d, hf, wf)
    maps spanning the image for the per-image models (None: models off).
    """
    H, W = image.shape[:2]
    K = len(cams)
    if K == 0:
        return np.zeros((H, W), np.int64)
    s = tag_scores(cnn_shape, cams, aff_layers, params)
    scale = min(1.0, params.max_side / max(H, W))
    wsize = (max(2, round(W * scale)), max(2, round(H * scale)))
    s_work = resize_maps(s, wsize)
    prob = s_work / np.maximum(s_work.sum(0, keepdims=True), 1e-12)
    unary = -np.log(np.maximum(prob, 1e-4))
    lab = prob.argmax(0)
    small = cv2.resize(image, wsize, interpolation=cv2.INTER_AREA)
    lab_img = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    pair = potts_weights(lab_img, params.lam) if params.lam > 0 else None
    if params.model_weight > 0 and pixel_features is not None:
        maps = [resize_maps(f, wsize) for f in pixel_features]
        feats = np.concatenate([m.transpose(1, 2, 0) for m in maps] + [lab_img], axis=2)
        feats = (feats - feats.reshape(-1, feats.shape[2]).mean(0)) / (feats.reshape(-1, feats.shape[2]).std(0) + 1e-6)
        for it in range(params.em_iterations + 1):
            conf = (prob.max(0) >= params.confident).astype(np.float64) if it == 0 else np.ones(lab.shape)
            logodds = _fit_models(feats, lab, conf, K + 1)
            u = unary + params.model_weight * -np.clip(logodds, -10, 10)
            lab = u.argmin(0) if pair is None else alpha_expansion(u, pair, u.argmin(0), params.cycles)
    elif pair is not None:
        lab = alpha_expansion(unary, pair, lab, params.cycles)
    return cv2.resize(lab.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST).astype(np.int64)


__all__ = ["TagParams", "alpha_expansion", "initial_scores", "propagate", "segment_tags", "transition"]
