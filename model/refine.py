"""A negative click alone (Alt-click in Label Studio) on an existing mask: cut that part away.

With no positive click there is nothing to grow, so the prompt can only mean "not this" about
the mask the annotator sees. The part of ``mask`` around the negative seeds is removed by a
re-cut confined to the mask: the mask's core far from the clicks (farther than half the
mask's equivalent radius, sqrt(area / pi) / 2) is definite foreground, the negative seeds and
everything outside the mask definite background, and GrabCut decides the rest. The answer is
never larger than ``mask`` and never contains a negative seed; a click outside the mask
leaves it as it is.

A configuration whose cut answers clicks from the previous mask (featcut) gets the prompt as
one more click on that mask instead: the mask's bounding box with the negative seeds and
``previous=mask`` (``Segmenter.segment_box``), so the click's feature look-alikes near it go
too, as after any negative click in a box; the answer is confined to the mask alike.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .prompts import Box, Seeds
from .segmenter import Segmenter
from .techniques import Technique


def subtract_negatives(
    seg: Segmenter, mask: np.ndarray, seeds: Seeds, voc_class: str | None = None, technique: Technique | None = None
) -> tuple[np.ndarray, float]:
    """(new mask, score) of ``mask`` minus the region named by ``seeds``' negative clicks or
    strokes (positive seeds are ignored: the caller routes those to the ordinary seed cut)."""
    h, w = seg.image.shape[:2]
    mask = np.asarray(mask, bool)
    if mask.shape != (h, w):
        raise ValueError(f"mask is {mask.shape[1]}x{mask.shape[0]}, the image {w}x{h}")
    _, neg = Seeds(negative_points=seeds.negative_points, negative_mask=seeds.negative_mask).rasterize(h, w)
    if not (neg & mask).any():
        return mask.copy(), 1.0
    dist = cv2.distanceTransform((~neg).astype(np.uint8), cv2.DIST_L2, 5)
    core = mask & (dist > math.sqrt(mask.sum() / math.pi) / 2.0)
    core &= cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    if not core.any():  # the clicks sit in the middle of a small mask: all of it goes
        return np.zeros_like(mask), 0.0
    if seg.answers_from_previous:
        box = Box.of_mask(mask)
        negatives = Seeds(positive_mask=core, negative_points=seeds.negative_points, negative_mask=seeds.negative_mask)
        # The box technique of the configuration (the tag technique the caller passes is for
        # whole-image cuts); without a class, the box alone (naked GrabCut's initial mask).
        tech = seg.config.box_technique if voc_class is not None else Technique("grabcut")
        res = seg.segment_box(box, voc_class, tech, seeds=negatives, previous=mask)
        return res.mask & mask & ~neg, res.score
    res = seg.segment_seeds(
        Seeds(positive_mask=core, negative_points=seeds.negative_points, negative_mask=neg | ~mask), voc_class, technique
    )
    return res.mask & mask & ~neg, res.score
