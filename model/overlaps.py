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
object. One exception, for nested boxes: inside a box that lies (>= 90 % of its area) within
another, the outer box has no evidence, so the inner box keeps its pixels: what an annotator
boxed inside a bigger box is in front of it (a dog on a chair, a person on a sofa), and the
outer box's centrality would otherwise take the inner object's rim. Pixels claimed by one mask
only, and every mask of
a task without overlaps, are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Corners = tuple[float, float, float, float]
NESTED_SHARE = 0.9  # a box this much inside a bigger one is "in front of" it


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


def nested(inner: Corners, outer: Corners, share: float = NESTED_SHARE) -> bool:
    """``inner`` lies (at least ``share`` of its area) within ``outer`` and is the smaller box."""
    area = max(inner[2] - inner[0], 0.0) * max(inner[3] - inner[1], 0.0)
    oarea = max(outer[2] - outer[0], 0.0) * max(outer[3] - outer[1], 0.0)
    iw = max(min(inner[2], outer[2]) - max(inner[0], outer[0]), 0.0)
    ih = max(min(inner[3], outer[3]) - max(inner[1], outer[1]), 0.0)
    return 0.0 < area < oarea and iw * ih >= share * area


def evidence_maps(shape: tuple[int, int], boxes: Sequence[Corners], cams: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    """Every box's evidence map (:func:`box_evidence`), zero inside the boxes nested in it."""
    out = [box_evidence(shape, b, c) for b, c in zip(boxes, cams, strict=True)]
    for i, outer in enumerate(boxes):
        for j, inner in enumerate(boxes):
            if i != j and nested(inner, outer):
                x0, y0, x1, y1 = (int(round(v)) for v in inner)
                out[i][max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = 0.0
    return out


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
