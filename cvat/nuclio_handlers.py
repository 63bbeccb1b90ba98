"""The nuclio functions' request/response formats (CVAT's serverless "lambda" protocol).

What CVAT's server sends and reads, from its sources:
* detector (cvat/apps/lambda_manager/views.py, LambdaFunction.invoke and LambdaJob's
  _call_detector): in ``{"image": base64, "threshold"?}``; out a list of
  ``{"label", "type": "mask", "mask": [flat 0/1 of the box crop, rows, ..., xtl, ytl, xbr, ybr],
  "points": polygon, "confidence"}``; the server RLE-encodes ``mask`` (datumaro
  mask_tools.mask_to_rle of the flat list) or, with "convert masks to polygons", uses ``points``.
  The crop format is serverless/openvino/base/shared.py's to_cvat_mask (inclusive corners).
* interactor (same views.py; cvat-core/src/lambda-manager.ts InteractorResults): in
  ``{"image", "pos_points": [[x, y]...], "neg_points": [...], "obj_bbox": [x1, y1, x2, y2] | None}``;
  out ``{"mask": rows of the full frame}`` (no ``bounds``: the mask covers the whole frame).

Bad input answers 400 with a message (the server passes the status and text on to the UI)
instead of raising inside the nuclio worker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from model import VOC_CLASSES, ImageError

from .engine import Engine, PromptError, label_map, polygons, resolve_labels
from .images import from_base64

LABELS_ENV = "CAMCUT_CVAT_LABELS"  # comma-separated label names for the spec; default: the 20 VOC classes


class BadRequest(ValueError):
    pass


def spec_labels() -> list[str]:
    raw = os.environ.get(LABELS_ENV, "")
    return [s.strip() for s in raw.split(",") if s.strip()] or list(VOC_CLASSES)


def to_cvat_mask(mask: np.ndarray) -> list[int]:
    """Flat 0/1 of the mask's bounding box (inclusive), then xtl, ytl, xbr, ybr - the layout of
    serverless/openvino/base/shared.py's to_cvat_mask that every CVAT detector returns."""
    ys, xs = np.nonzero(mask)
    xtl, ytl, xbr, ybr = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    flat = mask[ytl : ybr + 1, xtl : xbr + 1].astype(np.uint8).ravel().tolist()
    return flat + [xtl, ytl, xbr, ybr]


def _body(event_body: Any) -> Mapping[str, Any]:
    body = event_body
    if isinstance(body, (bytes, bytearray)):
        try:
            body = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadRequest(f"request body is not JSON: {exc}") from exc
    if not isinstance(body, Mapping):
        raise BadRequest("request body must be a JSON object")
    return body


def detect(engine: Engine, classes: Mapping[str, str], event_body: Any) -> list[dict[str, Any]]:
    body = _body(event_body)
    threshold = body.get("threshold")
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0 <= threshold <= 1):
        raise BadRequest(f"threshold must be a number in [0, 1], got {threshold!r}")
    try:
        rgb = from_base64(body.get("image"))
    except ImageError as exc:
        raise BadRequest(str(exc)) from exc
    out = []
    for d in engine.detect(rgb, dict(classes), threshold):
        polys = polygons(d.mask)
        out.append(
            {
                "label": d.label,
                "type": "mask",
                "mask": to_cvat_mask(d.mask),
                "points": polys[0] if polys else [],
                "confidence": f"{d.confidence:.4f}",
            }
        )
    return out


def _bbox(raw: Any) -> tuple[float, float, float, float] | None:
    """obj_bbox as [x1, y1, x2, y2]; older servers send two corner points [[x1, y1], [x2, y2]]."""
    if raw is None or raw == []:
        return None
    try:
        vals = [float(v) for v in (np.asarray(raw, dtype=float).ravel())]
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"obj_bbox is not numbers: {raw!r}") from exc
    if len(vals) != 4:
        raise BadRequest(f"obj_bbox needs 4 numbers (x1, y1, x2, y2), got {raw!r}")
    return vals[0], vals[1], vals[2], vals[3]


def _points(raw: Any, name: str) -> list[tuple[float, float]]:
    if raw is None:
        return []
    try:
        arr = np.asarray(raw, dtype=float)
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"{name} is not a list of [x, y] points: {raw!r}") from exc
    if arr.size == 0:
        return []
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise BadRequest(f"{name} is not a list of [x, y] points: {raw!r}")
    return [(float(x), float(y)) for x, y in arr]


def interact(engine: Engine, event_body: Any) -> dict[str, Any]:
    body = _body(event_body)
    pos, neg = _points(body.get("pos_points"), "pos_points"), _points(body.get("neg_points"), "neg_points")
    bbox = _bbox(body.get("obj_bbox"))
    try:
        rgb = from_base64(body.get("image"))
    except ImageError as exc:
        raise BadRequest(str(exc)) from exc
    engine.set_image(rgb)
    try:
        mask = engine.interact(pos, neg, bbox)
    except PromptError as exc:
        raise BadRequest(f"camcut cannot use this prompt: {exc}") from exc
    # 0/255 rows like CVAT's own interactors (e.g. serverless/pytorch/shiyinzhang/iog: mask.tolist())
    return {"mask": (mask.astype(np.uint8) * 255).tolist()}


def respond(context: Any, fn: Any, *args: Any) -> Any:
    """Run ``fn`` and wrap its result in a nuclio Response: 200 JSON, or 400 with the message."""
    try:
        result, status = fn(*args), 200
    except BadRequest as exc:
        context.logger.warn(f"bad request: {exc}")
        result, status = {"error": str(exc)}, 400
    return context.Response(body=json.dumps(result), headers={}, content_type="application/json", status_code=status)


def init(context: Any, kind: str) -> None:
    """nuclio init_context: load the engine once per worker (the CNN weights ship in model/)."""
    context.user_data.engine = Engine()
    if kind == "detector":
        names = spec_labels()
        context.user_data.classes = resolve_labels(names, label_map())
