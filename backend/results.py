"""Label Studio's result format: brush RLE, one brushlabels result per mask, one prediction per task."""

from __future__ import annotations

import uuid
from typing import Any

import cv2
import numpy as np
from label_studio_sdk.converter.brush import decode_rle, mask2rle

from .errors import TaskError
from .schema import Schema


def mask_to_rle(mask: np.ndarray) -> list[int]:
    return [int(v) for v in mask2rle(np.asarray(mask, bool).astype(np.uint8) * 255)]


def rle_to_mask(rle: list[int], height: int, width: int) -> np.ndarray:
    flat = np.asarray(decode_rle(rle), dtype=np.uint8)
    if flat.size != height * width * 4:
        raise TaskError(f"brush RLE decodes to {flat.size} values, expected {height}x{width}x4")
    return flat.reshape(height, width, 4)[:, :, 3] > 0


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """A brush mask drawn on LS's ``original_width`` x ``original_height`` onto the image as
    decoded here (nearest neighbour: a mask stays a mask). Only a format conversion."""
    if mask.shape == (height, width):
        return mask
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)


def decode_brush(rle: list[int], original_height: int, original_width: int, height: int, width: int) -> np.ndarray:
    """A brush result's RLE -> a boolean mask of the image's size."""
    return resize_mask(rle_to_mask(rle, original_height, original_width), height, width)


def brush_result(mask: np.ndarray, label: str, score: float, schema: Schema, technique: str, voc_class: str | None,
                 fallback: str | None = None) -> dict[str, Any]:
    """One ``brushlabels`` result; ``meta`` tells the annotator (and the correction loop) what made it."""
    h, w = mask.shape
    return {
        "id": uuid.uuid4().hex[:10],
        "type": "brushlabels",
        "from_name": schema.brush_from,
        "to_name": schema.image_to,
        "original_width": int(w),
        "original_height": int(h),
        "image_rotation": 0,
        "value": {"format": "rle", "rle": mask_to_rle(mask), "brushlabels": [label]},
        "score": round(float(score), 4),
        "readonly": False,
        "meta": {"technique": technique, "voc_class": voc_class, **({"fallback": fallback} if fallback else {})},
    }


def task_prediction(results: list[dict[str, Any]], model_version: str, mode: str, warnings: list[str]) -> dict[str, Any]:
    """The prediction of one task: its results, their mean score, and why it is empty if it is."""
    pred: dict[str, Any] = {
        "result": results,
        "score": float(np.mean([r["score"] for r in results])) if results else 0.0,
        "model_version": model_version,
        "mode": mode,
    }
    if warnings:
        pred["warnings"] = warnings
    if not results:
        pred["error"] = "; ".join(warnings) or "no mask could be made for this task"
    return pred


def failed_prediction(model_version: str, error: str) -> dict[str, Any]:
    """A task that could not be predicted: no result, the reason in ``error``."""
    return {"result": [], "score": 0.0, "model_version": model_version, "error": error}
