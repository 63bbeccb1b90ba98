"""Label Studio's result format: brush RLE, one brushlabels result per mask, one prediction per task."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.image import resize_mask

from . import rle as brush_rle
from .schema import Schema


def mask_to_rle(mask: np.ndarray) -> list[int]:
    """A bool mask -> LS brush RLE (``backend/rle.py``: the SDK's format, bounded memory)."""
    return brush_rle.encode(mask)


def rle_to_mask(rle: list[int], height: int, width: int, max_pixels: int = brush_rle.DEFAULT_MAX_PIXELS) -> np.ndarray:
    """LS brush RLE -> bool mask; the header is checked against ``height`` x ``width`` and
    ``max_pixels`` before anything of that size is allocated (a TaskError otherwise)."""
    return brush_rle.decode(rle, height, width, max_pixels)


def decode_brush(
    rle: list[int],
    original_height: int,
    original_width: int,
    height: int,
    width: int,
    max_pixels: int = brush_rle.DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """A brush result's RLE -> a boolean mask of the image's size."""
    return resize_mask(rle_to_mask(rle, original_height, original_width, max_pixels), height, width)


@dataclass(frozen=True)
class EncodedMask:
    """A mask already in LS's RLE: a request keeps these, not its full-size masks (a 40 MP bool
    mask is 40 MB; its RLE a few KB), so its memory does not grow with its number of boxes."""

    rle: list[int]
    height: int
    width: int

    @classmethod
    def of(cls, mask: np.ndarray) -> EncodedMask:
        return cls(mask_to_rle(mask), int(mask.shape[0]), int(mask.shape[1]))


def brush_result(
    mask: np.ndarray | EncodedMask,
    label: str,
    score: float,
    schema: Schema,
    technique: str,
    voc_class: str | None,
    fallback: str | None = None,
) -> dict[str, Any]:
    """One ``brushlabels`` result; ``meta`` tells the annotator (and the correction loop) what made it."""
    enc = mask if isinstance(mask, EncodedMask) else EncodedMask.of(mask)
    h, w = enc.height, enc.width
    return {
        "id": uuid.uuid4().hex[:10],
        "type": "brushlabels",
        "from_name": schema.brush_from,
        "to_name": schema.image_to,
        "original_width": int(w),
        "original_height": int(h),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": enc.rle, "brushlabels": [label]},
        "score": round(float(score), 4),
        "readonly": False,
        "meta": {"technique": technique, "voc_class": voc_class, **({"fallback": fallback} if fallback else {})},
    }


def task_prediction(
    results: list[dict[str, Any]], model_version: str, mode: str, warnings: list[str], empty: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The prediction of one task: its results, their mean score, and why it is empty if it is.

    ``empty``: the classes asked for that have no pixels in the image ({label, voc_class, score,
    reason}). That is an answer, not a failure: such a task has no ``error`` (the benchmark and
    the evaluator count it as predicted, with an empty mask)."""
    pred: dict[str, Any] = {
        "result": results,
        "score": float(np.mean([r["score"] for r in results])) if results else 0.0,
        "model_version": model_version,
        "mode": mode,
    }
    if warnings:
        pred["warnings"] = warnings
    if empty:
        pred["empty"] = empty
    if not results and not empty:
        pred["error"] = "; ".join(warnings) or "no mask could be made for this task"
    return pred


def failed_prediction(model_version: str, error: str) -> dict[str, Any]:
    """A task that could not be predicted: no result, the reason in ``error``."""
    return {"result": [], "score": 0.0, "model_version": model_version, "error": error}
