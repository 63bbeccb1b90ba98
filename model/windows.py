"""Cut windows of the Segmenter: the part of the image a box's or a tag's cut sees."""

from __future__ import annotations

import numpy as np

from .cut import Window, grown_window
from .grabcut import foreground


def box_window(margin: float | None, x0: int, y0: int, x1: int, y1: int, w: int, h: int) -> Window | None:
    """Cut window around a box (None = whole image), per ``config.crop_margin``."""
    if margin is None:
        return None
    return grown_window(x0, y0, x1, y1, margin, w, h)


def tag_window(init: np.ndarray, margin: float | None) -> Window | None:
    """Cut window of a tag (None = whole image), per ``config.class_window_margin``."""
    if margin is None:
        return None
    ys, xs = np.nonzero(foreground(init))
    if not len(ys):
        return None
    h, w = init.shape
    return grown_window(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1, margin, w, h)
