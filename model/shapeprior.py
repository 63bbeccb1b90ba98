"""A per-class shape prior in box coordinates, learned from a project's corrections (issue 14).

What the corrected masks of a project share most is where, inside its box, an object of a class
lies: a person fills the middle of its box from top to bottom, a bicycle is thin, a cat is round.
The prior of a class is the mean of its corrected masks resampled to the box (``SIZE`` x
``SIZE``), shrunk towards the project-wide mean when the class has few corrections (a count of
``SHRINK`` pseudo-objects), which itself is shrunk towards 0.5 (no information). It is used as one
more unary term of the cut: ``weight * logit(prior(u, v))`` added to the head's log-odds
(model/head.py ``Head.logits``), ``weight`` fitted by a one-dimensional logistic regression on
leave-one-out priors (each object's own mask is taken out of its class mean, so the weight is
the one a new object would need).

Everything is plain arrays (``Head.to_arrays``): no pickle.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy.ndimage import map_coordinates

SIZE = 24  # cells across a box: a person's head, a bicycle's wheel are a few cells
SHRINK = 10.0  # pseudo-objects of the project-wide map in a class map (and of 0.5 in the project map)
CLIP = 0.03  # probabilities kept in [CLIP, 1 - CLIP]: a prior never forbids a pixel outright
MAX_WEIGHT = 2.0  # a bound on the fitted weight (the core's own unary is the main term)


def box_shape(mask_window: np.ndarray, box: tuple[int, int, int, int], valid: np.ndarray | None = None) -> np.ndarray:
    """(SIZE, SIZE) float32: the share of each cell of the box (x0, x1, y0, y1 in the window)
    covered by the mask (INTER_AREA: every pixel of the box counts), over the ``valid`` pixels
    only (VOC's void: a crowd's unlabelled people are not background); a cell without any valid
    pixel takes the box's mean."""
    x0, x1, y0, y1 = box
    crop = mask_window[y0:y1, x0:x1].astype(np.float32)
    if crop.size == 0:
        return np.full((SIZE, SIZE), 0.5, np.float32)
    ok = np.ones_like(crop) if valid is None else valid[y0:y1, x0:x1].astype(np.float32)
    if ok.sum() == 0:
        return np.full((SIZE, SIZE), 0.5, np.float32)
    num = cv2.resize(crop * ok, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    den = cv2.resize(ok, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    mean = float((crop * ok).sum() / ok.sum())
    return np.where(den > 1e-3, num / np.maximum(den, 1e-3), mean).astype(np.float32)


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, CLIP, 1 - CLIP)
    return np.log(q / (1 - q)).astype(np.float32)


def sample_map(shape_map: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The map's value at box coordinates (u, v) (any shape; bilinear, nearest cell outside)."""
    coords = np.stack([v.ravel() * SIZE - 0.5, u.ravel() * SIZE - 0.5])
    return map_coordinates(shape_map, coords, order=1, mode="nearest").reshape(u.shape).astype(np.float32)


def class_maps(shapes: Sequence[np.ndarray], classes: Sequence[str]) -> dict[str, np.ndarray]:
    """Shrunk mean maps per class and the project's (key "")."""
    if not shapes:
        return {}
    stack = np.stack([np.asarray(s, np.float32) for s in shapes])
    project = (stack.sum(axis=0) + SHRINK * 0.5) / (len(stack) + SHRINK)
    out = {"": project.astype(np.float32)}
    cls = np.array(list(classes), dtype=object)
    for c in sorted(set(cls.tolist())):
        own = stack[cls == c]
        out[str(c)] = ((own.sum(axis=0) + SHRINK * project) / (len(own) + SHRINK)).astype(np.float32)
    return out


def loo_maps(shapes: Sequence[np.ndarray], classes: Sequence[str]) -> list[np.ndarray]:
    """For each object, its class's map without the object itself (what a new object would get)."""
    stack = np.stack([np.asarray(s, np.float32) for s in shapes])
    n = len(stack)
    total = stack.sum(axis=0)
    cls = np.array(list(classes), dtype=object)
    sums = {c: stack[cls == c].sum(axis=0) for c in set(cls.tolist())}
    counts = {c: int((cls == c).sum()) for c in sums}
    out = []
    for i in range(n):
        c = cls[i]
        project = (total - stack[i] + SHRINK * 0.5) / (n - 1 + SHRINK)
        out.append(((sums[c] - stack[i] + SHRINK * project) / (counts[c] - 1 + SHRINK)).astype(np.float32))
    return out


def fit_weight(base: Sequence[np.ndarray], prior_logit: Sequence[np.ndarray], y: Sequence[np.ndarray]) -> float:
    """The weight w of ``base + w * prior_logit`` minimising the logistic loss, every object
    weighing alike (Newton steps on one variable; a library solver would need the offset term)."""
    z = np.concatenate([np.asarray(b, np.float64) for b in base])
    p = np.concatenate([np.asarray(q, np.float64) for q in prior_logit])
    t = np.concatenate([np.asarray(a, np.float64) for a in y])
    wt = np.concatenate([np.full(len(a), 1.0 / max(1, len(a))) for a in y])
    w = 0.0
    for _ in range(20):
        s = 1 / (1 + np.exp(-np.clip(z + w * p, -30, 30)))
        g = float(np.sum(wt * (s - t) * p))
        h = float(np.sum(wt * s * (1 - s) * p * p)) + 1e-3  # a small ridge: w stays finite if p says nothing
        step = g / h
        w = float(np.clip(w - step, 0.0, MAX_WEIGHT))
        if abs(step) < 1e-4:
            break
    return w


__all__ = ["CLIP", "MAX_WEIGHT", "SHRINK", "SIZE", "box_shape", "class_maps", "fit_weight", "logit", "loo_maps", "sample_map"]
