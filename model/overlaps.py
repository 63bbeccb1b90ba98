"""Overlapping boxes of one image: each pixel claimed by several box masks goes to one of them.

Each box is segmented on its own, so where two boxes overlap both masks may claim the same
pixels, and a mask ends in a straight line where its box edge cuts through the other object.
The rule here: a contested pixel goes to the box with the strongest evidence for it,

    evidence_i(p) = centrality_i(p) * (1/2 + 1/2 * cam_i(p))

with ``centrality`` 1 at the box centre falling to 0 on the box edge (the product of the
two axes' linear falls, so it is 0 on every side of the rectangle and ties only there) and
``cam`` the box's class CAM normalised within the box (no class: 0, centrality alone
decides). Centrality is a factor, not a summand, so a box never wins a pixel on its own edge
against a box that holds the pixel inside: no mask keeps its box edge inside another box's
object. Pixels claimed by one mask only, and every mask of
a task without overlaps, are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Corners = tuple[float, float, float, float]


def centrality(shape: tuple[int, int], box: Corners) -> np.ndarray:
    """1 at the box centre, 0 on and outside its edge: (1 - |dx| / half width) * (1 - |dy| / half height)."""
    h, w = shape
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    hw, hh = max((x1 - x0) / 2.0, 1e-6), max((y1 - y0) / 2.0, 1e-6)
    xs = np.clip(1.0 - np.abs((np.arange(w, dtype=np.float32) + 0.5 - cx) / hw), 0.0, 1.0)
    ys = np.clip(1.0 - np.abs((np.arange(h, dtype=np.float32) + 0.5 - cy) / hh), 0.0, 1.0)
    return ys[:, None] * xs[None, :]


def box_evidence(shape: tuple[int, int], box: Corners, cam: np.ndarray | None = None) -> np.ndarray:
    """The evidence map of one box (module docstring); ``cam`` in [0, 1] of the image's size."""
    c = centrality(shape, box)
    if cam is None:
        return c * 0.5
    return c * (0.5 + 0.5 * np.clip(cam.astype(np.float32), 0.0, 1.0))


def resolve_overlaps(masks: Sequence[np.ndarray], evidence: Sequence[np.ndarray]) -> list[np.ndarray]:
    """New masks where every pixel belongs to at most one mask: a contested pixel goes to the
    mask with the highest evidence there (the first of equals). Inputs are not modified."""
    if len(masks) != len(evidence):
        raise ValueError(f"{len(masks)} masks but {len(evidence)} evidence maps")
    if len(masks) < 2:
        return [np.asarray(m, bool).copy() for m in masks]
    stack = np.stack([np.asarray(m, bool) for m in masks])
    contested = stack.sum(axis=0) > 1
    out = [m.copy() for m in stack]
    if not contested.any():
        return out
    ev = np.stack([np.asarray(e, np.float32) for e in evidence])
    ev = np.where(stack, ev, -np.inf)  # only the masks that claim a pixel compete for it
    owner = ev.argmax(axis=0)
    for i, m in enumerate(out):
        m[contested & (owner != i)] = False
    return out
