"""Binary mask -> polygons (outer contours), for annotation tools that want polygons (CVAT)."""

from __future__ import annotations

import cv2
import numpy as np


def mask_to_polygons(mask: np.ndarray, min_area: float = 16.0, epsilon: float = 1.0) -> list[list[float]]:
    """Outer contours of ``mask`` as flat ``[x0, y0, x1, y1, ...]`` lists, largest first.

    Holes are dropped (a polygon shape cannot carry them); regions under ``min_area`` px and
    contours simplified to fewer than 3 vertices are left out. ``epsilon`` is the
    Douglas-Peucker tolerance in pixels: it keeps the point lists short without moving the
    outline by more than that.
    """
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out: list[tuple[float, list[float]]] = []
    for c in contours:
        area = float(cv2.contourArea(c))
        if area < min_area:
            continue
        approx = cv2.approxPolyDP(c, epsilon, True).reshape(-1, 2)
        if len(approx) < 3:
            continue
        out.append((area, [float(v) for v in approx.ravel()]))
    out.sort(key=lambda t: -t[0])
    return [p for _, p in out]
