"""What an annotator hands the engine: boxes, clicks and brush strokes."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from .techniques import Technique


class BoxError(ValueError):
    """A box with no area inside the image, or with non-finite coordinates."""


@dataclass(frozen=True)
class Box:
    """Pixel box, half-open: columns x0..x1-1, rows y0..y1-1 (floats are allowed)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def from_voc(cls, xmin: float, ymin: float, xmax: float, ymax: float) -> Box:
        """VOC XML boxes are 1-based and inclusive."""
        return cls(xmin - 1, ymin - 1, xmax, ymax)

    @classmethod
    def of_mask(cls, mask: np.ndarray) -> Box:
        """The bounding box of a non-empty (H, W) bool mask."""
        ys, xs = np.nonzero(mask)
        return cls(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)

    def clip(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Integer box clipped to the image; raises BoxError if nothing is left."""
        vals = (self.x0, self.y0, self.x1, self.y1)
        if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in vals):
            raise BoxError(f"box coordinates must be finite numbers, got {vals}")
        x0, x1 = sorted((self.x0, self.x1))
        y0, y1 = sorted((self.y0, self.y1))
        cx0, cy0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
        cx1, cy1 = min(width, int(math.ceil(x1))), min(height, int(math.ceil(y1)))
        if cx1 <= cx0 or cy1 <= cy0:
            raise BoxError(f"box {vals} has no area inside the {width}x{height} image")
        return cx0, cy0, cx1, cy1


@dataclass(frozen=True)
class Seeds:
    """Hard hints from an annotator: clicks (pixel points) and brush strokes (bool masks).

    Positive hints become definite foreground, negative ones definite background; each click
    is a disk of radius ``max(3 px, 1% of the shorter image side)``. Where a positive and a
    negative click's disks overlap, each pixel goes to the nearer click (:func:`split_click_overlap`);
    where a brush stroke overlaps anything of the other label, the negative wins.
    """

    positive_points: tuple[tuple[float, float], ...] = ()
    negative_points: tuple[tuple[float, float], ...] = ()
    positive_mask: np.ndarray | None = None
    negative_mask: np.ndarray | None = None

    def is_empty(self) -> bool:
        return not (self.positive_points or self.negative_points or _any(self.positive_mask) or _any(self.negative_mask))

    def rasterize(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(positive, negative) bool masks of the image size; negative wins where both."""
        pos = np.zeros((height, width), np.uint8)
        neg = np.zeros((height, width), np.uint8)
        r = max(3, int(round(0.01 * min(height, width))))
        for pts, m in ((self.positive_points, pos), (self.negative_points, neg)):
            for x, y in pts:
                if not (math.isfinite(x) and math.isfinite(y)):
                    raise BoxError(f"click ({x}, {y}) is not a finite point")
                if 0 <= x < width and 0 <= y < height:
                    cv2.circle(m, (int(x), int(y)), r, 1, thickness=-1)
        p, n = pos.astype(bool), neg.astype(bool)
        split_click_overlap(p, n, self.positive_points, self.negative_points, r)
        for src, dst in ((self.positive_mask, p), (self.negative_mask, n)):
            if src is not None:
                if src.shape != (height, width):
                    raise BoxError(f"brush mask of shape {src.shape} does not match the {width}x{height} image")
                dst |= src.astype(bool)
        p &= ~n
        return p, n


def split_click_overlap(
    pos: np.ndarray,
    neg: np.ndarray,
    positive_points: Iterable[tuple[float, float]],
    negative_points: Iterable[tuple[float, float]],
    reach: int,
) -> None:
    """Give each pixel in both a positive and a negative click's disk (``pos`` and ``neg``, bool,
    changed in place) to the nearer of the two clicks; equal distances stay negative. ``reach``:
    the disks' radius (any larger value gives the same result).

    A disk is several pixels wide, so an annotator's click close to an earlier click of the other
    label fell inside its disk, and "negative wins" ignored it: the simulator then clicked the same
    missed pixel to the end (2007_008468's chair stuck at 0.75 IoU for 18 clicks). Nearest-click
    keeps every click's own pixel and splits the overlap between the two. The distances come from
    SciPy's exact Euclidean transform of the overlap's bounding box grown by ``reach`` (every click
    whose disk covers an overlap pixel lies in it), so the cost is bounded by the image's size
    whatever the number of clicks."""
    both = pos & neg
    if not both.any():
        return
    ys, xs = np.nonzero(both)
    h, w = both.shape
    y0, y1 = max(0, int(ys.min()) - reach), min(h, int(ys.max()) + reach + 1)
    x0, x1 = max(0, int(xs.min()) - reach), min(w, int(xs.max()) + reach + 1)

    def distance(points: Iterable[tuple[float, float]]) -> np.ndarray:
        away = np.ones((y1 - y0, x1 - x0), bool)  # False at the clicks' own pixels
        for x, y in points:
            if math.isfinite(x) and math.isfinite(y) and y0 <= int(y) < y1 and x0 <= int(x) < x1:
                away[int(y) - y0, int(x) - x0] = False
        return ndimage.distance_transform_edt(away)[ys - y0, xs - x0]

    to_pos = distance(positive_points) < distance(negative_points)
    neg[ys[to_pos], xs[to_pos]] = False
    pos[ys[~to_pos], xs[~to_pos]] = False


def _any(m: np.ndarray | None) -> bool:
    return m is not None and bool(np.any(m))


@dataclass(frozen=True)
class BoxPrompt:
    """One box to segment: its class (needed by the CAM techniques), technique and seeds."""

    box: Box
    voc_class: str | None = None
    technique: Technique | None = None
    seeds: Seeds | None = None
    # The mask answered last for this box (H, W bool): the starting point of a cut that uses it
    # (featcut); the GrabCut configurations ignore it.
    previous: np.ndarray | None = None
