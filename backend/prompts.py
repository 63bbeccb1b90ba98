"""A task (or LS's interactive context) -> what to segment: pure functions, no model, no network.

What is read, first match wins (see ``backend/config.py``): the interactive context's
rectangles / keypoints / brush strokes; rectangles already on the task; tags (a ``choices``
result, else task data fields); nothing (the caller lets the CNN guess).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from model import Seeds

from .errors import TaskError
from .results import decode_brush
from .schema import Schema

# (x0, y0, x1, y1): percent of the image in LS results, pixels once placed on an image
Corners = tuple[float, float, float, float]


@dataclass(frozen=True)
class LabeledBox:
    """A rectangle and its label (the label may be empty)."""

    label: str
    box: Corners

    def to_pixels(self, width: int, height: int) -> "LabeledBox":
        """Percent box -> pixel box on a ``width`` x ``height`` image."""
        return LabeledBox(self.label, percent_to_pixels(self.box, width, height))


@dataclass(frozen=True)
class WantedClass:
    """A class to segment over the whole image: the brush label to give the mask, its VOC class,
    and the CNN's probability when the class was guessed (None: a tag, scored by the engine)."""

    label: str
    voc_class: str
    probability: float | None = None


@dataclass(frozen=True)
class InteractivePrompt:
    """What the annotator just drew: percent boxes, click/stroke seeds, and the first label given."""

    boxes: tuple[LabeledBox, ...]
    seeds: Seeds
    label: str


def is_interactive_context(context: Any) -> bool:
    """LS's interactive pre-annotation context: an object with a non-empty ``result`` list."""
    return isinstance(context, dict) and isinstance(context.get("result"), list) and bool(context["result"])


def int64(value: Any) -> int | None:
    """An id usable as an SQLite INTEGER (JSON may carry bools, floats or huge integers)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63 else None


def percent_to_pixels(box: Corners, width: int, height: int) -> Corners:
    return (box[0] * width / 100.0, box[1] * height / 100.0, box[2] * width / 100.0, box[3] * height / 100.0)


def results_of(task: Mapping[str, Any]) -> list[list[dict[str, Any]]]:
    """Result lists of the task: newest non-cancelled annotation first, then predictions."""
    lists: list[list[dict[str, Any]]] = []
    anns = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    anns.sort(key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""), reverse=True)
    preds = [p for p in task.get("predictions") or [] if isinstance(p, dict)]
    for item in anns + preds:
        res = item.get("result")
        if isinstance(res, str):
            try:
                res = json.loads(res)
            except json.JSONDecodeError:
                continue
        if isinstance(res, list):
            lists.append([r for r in res if isinstance(r, dict)])
    return lists


def rect_box(r: Mapping[str, Any], task: Mapping[str, Any]) -> LabeledBox:
    """The label and percent box of a rectangle result; a rotated one -> its bounding box."""
    v = r.get("value") or {}
    labels = v.get("rectanglelabels") or v.get("labels") or []
    label = str(labels[0]) if labels else ""
    try:
        x, y, bw, bh = (float(v[k]) for k in ("x", "y", "width", "height"))
        rot = float(v.get("rotation") or 0.0)
    except (KeyError, TypeError, ValueError):
        raise TaskError(f"rectangle {r.get('id')!r} of task {task.get('id')} has no numeric x/y/width/height") from None
    if rot and math.isfinite(rot):
        # LS rotates about the top-left corner, clockwise in pixel space; percent axes scale
        # differently, so the bounding box is taken in pixels of the original size.
        ow = float(r.get("original_width") or 100.0)
        oh = float(r.get("original_height") or 100.0)
        c, s = math.cos(math.radians(rot)), math.sin(math.radians(rot))
        x0p, y0p, wp, hp = x * ow / 100, y * oh / 100, bw * ow / 100, bh * oh / 100
        xs = [x0p + dx * c - dy * s for dx, dy in ((0, 0), (wp, 0), (0, hp), (wp, hp))]
        ys = [y0p + dx * s + dy * c for dx, dy in ((0, 0), (wp, 0), (0, hp), (wp, hp))]
        return LabeledBox(label, (min(xs) * 100 / ow, min(ys) * 100 / oh, max(xs) * 100 / ow, max(ys) * 100 / oh))
    return LabeledBox(label, (x, y, x + bw, y + bh))


def task_boxes(task: Mapping[str, Any], schema: Schema,
               full_task: Callable[[], Mapping[str, Any]] = dict) -> list[LabeledBox]:
    """The percent boxes of the first result list that has rectangles. ``full_task`` is asked for
    the task with its annotations and predictions when LS sent neither (read through its API)."""
    if not schema.rect_from:
        return []
    lists = results_of(task)
    if not lists and "annotations" not in task and "predictions" not in task:
        lists = results_of(full_task())
    for results in lists:
        boxes = [rect_box(r, task) for r in results
                 if r.get("from_name") in schema.rect_from and r.get("type", "").lower() in ("rectanglelabels", "rectangle")]
        if boxes:
            return boxes
    return []


def task_tags(task: Mapping[str, Any], schema: Schema, tag_fields: Sequence[str]) -> list[str]:
    """Image-level classes: a ``choices`` result on the task, else a list or comma string in one
    of ``tag_fields`` of its data. Duplicates removed, order kept."""
    for results in results_of(task):
        tags = [str(c) for r in results if r.get("from_name") in schema.choices_from
                for c in (r.get("value") or {}).get("choices") or []]
        if tags:
            return list(dict.fromkeys(tags))
    data = task.get("data") or {}
    for name in tag_fields:
        val = data.get(name)
        if isinstance(val, str):
            tags = [t.strip() for t in val.split(",") if t.strip()]
        elif isinstance(val, list):
            tags = [str(t).strip() for t in val if str(t).strip()]
        else:
            continue
        if tags:
            return list(dict.fromkeys(tags))
    return []


def interactive_prompt(items: list[Any], width: int, height: int) -> InteractivePrompt:
    """LS's interactive ``context.result`` on a ``width`` x ``height`` image -> boxes and seeds.
    Keypoints and strokes with ``is_positive`` false are background seeds."""
    boxes: list[LabeledBox] = []
    pos_pts: list[tuple[float, float]] = []
    neg_pts: list[tuple[float, float]] = []
    pos_mask = np.zeros((height, width), bool)
    neg_mask = np.zeros((height, width), bool)
    label = ""
    for r in items:
        if not isinstance(r, dict):
            continue
        kind = str(r.get("type", "")).lower()
        v = r.get("value") or {}
        positive = r.get("is_positive", v.get("is_positive", True)) not in (False, 0, "false", "False")
        if kind in ("rectanglelabels", "rectangle"):
            box = rect_box(r, {"id": None})
            boxes.append(box)
            label = label or box.label
        elif kind in ("keypointlabels", "keypoint"):
            try:
                pt = (float(v["x"]) * width / 100.0, float(v["y"]) * height / 100.0)
            except (KeyError, TypeError, ValueError):
                raise TaskError("keypoint without numeric x/y in the interactive context") from None
            (pos_pts if positive else neg_pts).append(pt)
            labs = v.get("keypointlabels") or []
            if positive and labs:
                label = label or str(labs[0])
        elif kind in ("brushlabels", "brush"):
            ow, oh = int(r.get("original_width") or width), int(r.get("original_height") or height)
            rle = v.get("rle")
            if not isinstance(rle, list) or not rle:
                raise TaskError("brush stroke without an RLE in the interactive context")
            m = decode_brush(rle, oh, ow, height, width)
            (pos_mask if positive else neg_mask).__ior__(m)
            labs = v.get("brushlabels") or []
            if positive and labs:
                label = label or str(labs[0])
    seeds = Seeds(tuple(pos_pts), tuple(neg_pts), pos_mask if pos_mask.any() else None, neg_mask if neg_mask.any() else None)
    return InteractivePrompt(tuple(boxes), seeds, label)
