"""The camcut model behind the Label Studio ML backend protocol (web-free; ``backend/app.py``
is the Flask layer). See ``backend/config.py`` for what each mode does.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Mapping

import cv2
import numpy as np
from label_studio_sdk.converter.brush import decode_rle, mask2rle
from label_studio_sdk.label_interface import LabelInterface

from model import Box, BoxError, BoxPrompt, CamNet, ImageError, Seeds, Segmenter, Technique, UnknownClassError, decode_image
from model import adapt
from model import voc as voc_module
from model.engine import CnnOutput, EngineConfig, get_config
from model.techniques import ThresholdError

from .config import Settings
from .fetch import FetchError, ImageFetcher, RedactingFilter, redact
from .labels import LabelMap
from .store import Correction, PredictedRegion, Store

log = logging.getLogger("backend.model")

TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED", "START_TRAINING")


class SchemaError(ValueError):
    """The project's labelling config cannot be used (not XML, no BrushLabels on an Image)."""


class TaskError(ValueError):
    """One task cannot be predicted (reported in that task's result, the batch goes on)."""


# ------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class Schema:
    brush_from: str
    image_to: str
    value_key: str
    brush_labels: tuple[str, ...]
    rect_from: frozenset[str]
    choices_from: frozenset[str]
    keypoint_from: frozenset[str]


def _label_values(control: Any) -> tuple[str, ...]:
    attrs = getattr(control, "labels_attrs", None) or {}
    return tuple(str(getattr(a, "attr", {}).get("value", k)) for k, a in attrs.items())


def parse_schema(label_config: str) -> Schema:
    if not isinstance(label_config, str) or not label_config.strip():  # checked before the cache: a list is unhashable
        raise SchemaError("the project has no labelling config")
    return _parse_schema(label_config)


def is_interactive_context(context: Any) -> bool:
    """LS's interactive pre-annotation context: an object with a non-empty ``result`` list."""
    return isinstance(context, dict) and isinstance(context.get("result"), list) and bool(context["result"])


def _int64(value: Any) -> int | None:
    """An id usable as an SQLite INTEGER (JSON may carry bools, floats or huge integers)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63 else None


@functools.lru_cache(maxsize=64)
def _parse_schema(label_config: str) -> Schema:
    try:
        li = LabelInterface(label_config)
        controls = list(li.controls)
    except Exception as exc:  # the SDK raises several XML/validation exception types
        raise SchemaError(f"the labelling config is not valid XML: {exc}") from None
    images = {o.name: o for o in li.objects if o.tag.lower() == "image"}
    brush = [c for c in controls if c.tag.lower() in ("brushlabels", "brush") and any(t in images for t in c.to_name)]
    if not brush:
        raise SchemaError(
            "the labelling config has no <BrushLabels> tag on an <Image>: camcut predicts brush masks, "
            'add e.g. <BrushLabels name="mask" toName="image"><Label value="dog"/></BrushLabels>'
        )
    b = brush[0]
    image_to = next(t for t in b.to_name if t in images)
    value = str(images[image_to].value or "")
    if not value.startswith("$") or len(value) < 2:
        raise SchemaError(f'the <Image name="{image_to}"> tag needs value="$field", got {value!r}')

    def on_image(*tags: str) -> frozenset[str]:
        return frozenset(c.name for c in controls if c.tag.lower() in tags and image_to in c.to_name)

    return Schema(
        brush_from=b.name,
        image_to=image_to,
        value_key=value[1:],
        brush_labels=_label_values(b),
        rect_from=on_image("rectanglelabels", "rectangle"),
        choices_from=on_image("choices"),
        keypoint_from=on_image("keypointlabels", "keypoint"),
    )


# ------------------------------------------------------------------------------------ RLE
def mask_to_rle(mask: np.ndarray) -> list[int]:
    return [int(v) for v in mask2rle(np.asarray(mask, bool).astype(np.uint8) * 255)]


def rle_to_mask(rle: list[int], height: int, width: int) -> np.ndarray:
    flat = np.asarray(decode_rle(rle), dtype=np.uint8)
    if flat.size != height * width * 4:
        raise TaskError(f"brush RLE decodes to {flat.size} values, expected {height}x{width}x4")
    return flat.reshape(height, width, 4)[:, :, 3] > 0


def _resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    if mask.shape == (height, width):
        return mask
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)


# ------------------------------------------------------------------------------------ cache
class ImageCache:
    """The last few decoded images and their CNN outputs, keyed by (task id, image URL).

    Interactive pre-annotation sends one /predict per prompt on the same task; like
    SamPredictor's set_image, the image is fetched and the CNN run once, then each prompt is
    cheap. Bounded by entries and by pixels so that large photos cannot exhaust memory.
    """

    def __init__(self, max_entries: int = 8, max_pixels: int = 40_000_000) -> None:
        self.max_entries, self.max_pixels = max_entries, max_pixels
        self._items: "OrderedDict[tuple[str, str], tuple[np.ndarray, CnnOutput]]" = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> tuple[np.ndarray, CnnOutput] | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: tuple[str, str], item: tuple[np.ndarray, CnnOutput]) -> None:
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while self._items and (len(self._items) > self.max_entries or sum(i[0].shape[0] * i[0].shape[1] for i in self._items.values()) > self.max_pixels):
                self._items.popitem(last=False)


# ------------------------------------------------------------------------------------ model
@dataclass
class Region:
    """One mask to return, and what produced it."""

    label: str
    voc_class: str | None
    kind: str
    mask: np.ndarray
    technique: Technique
    score: float
    box: tuple[float, float, float, float] | None = None
    fallback: str | None = None


@dataclass
class TaskOutcome:
    regions: list[Region] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    mode: str = ""


class CamCutModel:
    """Predictions, model version and the correction loop for all projects of one process."""

    def __init__(self, settings: Settings, net: CamNet | None = None, fetcher: ImageFetcher | None = None) -> None:
        self.settings = settings
        base = get_config(settings.engine_config)
        try:
            box_t = Technique.parse(settings.box_technique) if settings.box_technique else base.box_technique
            class_t = Technique.parse(settings.class_technique) if settings.class_technique else base.class_technique
        except ThresholdError as exc:
            raise ValueError(f"CAMCUT_BOX_TECHNIQUE / CAMCUT_CLASS_TECHNIQUE: {exc}") from None
        if class_t.kind == "grabcut":
            raise ValueError("CAMCUT_CLASS_TECHNIQUE cannot be naked grabcut: the class task has no box")
        self.config: EngineConfig = dataclasses.replace(base, box_technique=box_t, class_technique=class_t)
        self.net = net or CamNet(settings.weights or None)
        self.labels = LabelMap.from_file(settings.label_map)
        self.store = Store(settings.model_dir)
        self.fetcher = fetcher or ImageFetcher(settings)
        self._pool: ThreadPoolExecutor | None = None
        self._images = ImageCache()
        self._pool_lock = threading.Lock()
        log.addFilter(RedactingFilter(self.secrets))

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.settings.label_studio_api_key, self.settings.basic_auth_pass) if s)

    # -- versions -----------------------------------------------------------------------------
    def candidates(self, kind: str) -> tuple[Technique, ...]:
        tech = self.config.box_technique if kind == "box" else self.config.class_technique
        return adapt.candidate_techniques(tech.variant, self.settings.adapt_thresholds)

    def adapted(self, project: str) -> dict[tuple[str, str], tuple[Technique, float, int]]:
        """(kind, voc_class) -> (technique chosen from corrections, its mean IoU, corrections)."""
        out: dict[tuple[str, str], tuple[Technique, float, int]] = {}
        for (kind, cls), scores in self.store.technique_scores(project).items():
            allowed = {t.label: t for t in self.candidates(kind)}
            default = (self.config.box_technique if kind == "box" else self.config.class_technique).label
            pick = adapt.choose_technique({k: v for k, v in scores.items() if k in allowed}, self.settings.min_corrections, default)
            if pick is not None:
                out[(kind, cls)] = (allowed[pick[0]], pick[1], pick[2])
        return out

    def technique_for(self, adapted: Mapping[tuple[str, str], tuple[Technique, float, int]], kind: str, voc_class: str) -> Technique:
        if (kind, voc_class) in adapted:
            return adapted[(kind, voc_class)][0]
        return self.config.box_technique if kind == "box" else self.config.class_technique

    def model_version(self, project: str, adapted: Mapping[tuple[str, str], tuple[Technique, float, int]] | None = None) -> str:
        adapted = self.adapted(project) if adapted is None else adapted
        parts = [
            self.config.version_key,
            self.net.weights.sha256,
            voc_module.MAPPING_VERSION,
            self.labels.version,
            json.dumps(sorted(f"{k}:{c}={t.label}" for (k, c), (t, _, _) in adapted.items())),
        ]
        digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]
        return f"camcut-{self.config.name}-{digest}"

    def setup(self, project: str, label_config: str) -> dict[str, Any]:
        parse_schema(label_config)
        return {"model_version": self.model_version(project)}

    # -- prediction ---------------------------------------------------------------------------
    def predict(self, tasks: list[Any], project: str, label_config: str, context: Mapping[str, Any] | None,
                timings: dict[str, float] | None = None) -> list[dict[str, Any]]:
        """One prediction per task, in order. ``timings``, if given, receives the seconds spent
        downloading images ("download"), which the HTTP layer reports in Server-Timing."""
        schema = parse_schema(label_config)
        adapted = self.adapted(project)
        version = self.model_version(project, adapted)
        interactive = is_interactive_context(context)
        out = []
        for task in tasks:
            task_id = task.get("id") if isinstance(task, dict) else None
            try:
                if not isinstance(task, dict):
                    raise TaskError(f"a task must be a JSON object, got {type(task).__name__}")
                outcome = self._predict_task(task, schema, adapted, context if interactive else None, timings)
            except (TaskError, FetchError, ImageError, BoxError, SchemaError, UnknownClassError, ValueError) as exc:
                msg = redact(str(exc), self.secrets)
                log.warning("task %s: %s", task_id, msg)
                out.append({"result": [], "score": 0.0, "model_version": version, "error": msg})
                continue
            except Exception as exc:  # hostile/garbage task data must not fail the other tasks of the batch
                msg = redact(f"internal error on this task ({type(exc).__name__}: {exc})", self.secrets)
                log.exception("task %s: %s", redact(repr(task_id)[:80], self.secrets), msg)
                out.append({"result": [], "score": 0.0, "model_version": version, "error": msg})
                continue
            results = [self._to_result(r, schema) for r in outcome.regions]
            if _int64(task_id) is not None and results:
                self.store.save_predictions(
                    project, task_id, version,
                    [PredictedRegion(res["id"], r.label, r.voc_class, r.kind, r.box, r.technique.label,
                                     res["original_width"], res["original_height"], res["value"]["rle"])
                     for r, res in zip(outcome.regions, results)],
                    replace=not interactive,
                )
            for w in outcome.warnings:
                log.warning("task %s: %s", task_id, w)
            pred: dict[str, Any] = {
                "result": results,
                "score": float(np.mean([r["score"] for r in results])) if results else 0.0,
                "model_version": version,
                "mode": outcome.mode,
            }
            if outcome.warnings:
                pred["warnings"] = outcome.warnings
            if not results:
                pred["error"] = "; ".join(outcome.warnings) or "no mask could be made for this task"
            out.append(pred)
        return out

    def _to_result(self, r: Region, schema: Schema) -> dict[str, Any]:
        h, w = r.mask.shape
        return {
            "id": uuid.uuid4().hex[:10],
            "type": "brushlabels",
            "from_name": schema.brush_from,
            "to_name": schema.image_to,
            "original_width": int(w),
            "original_height": int(h),
            "image_rotation": 0,
            "value": {"format": "rle", "rle": mask_to_rle(r.mask), "brushlabels": [r.label]},
            "score": round(float(r.score), 4),
            "readonly": False,
            "meta": {"technique": r.technique.label, "voc_class": r.voc_class, **({"fallback": r.fallback} if r.fallback else {})},
        }

    def load_image(self, task: Mapping[str, Any], schema: Schema, timings: dict[str, float] | None = None) -> np.ndarray:
        data = task.get("data")
        if not isinstance(data, dict):
            raise TaskError("the task has no 'data' object")
        ref = data.get(schema.value_key)
        if ref is None:
            raise TaskError(f"the task data has no {schema.value_key!r} field (the <Image> value of the config)")
        if not isinstance(ref, str):
            raise TaskError(f"the task's {schema.value_key!r} must be a URL string, got {type(ref).__name__}")
        task_id = task.get("id") if isinstance(task.get("id"), int) else None
        t0 = time.perf_counter()
        fetched = self.fetcher.fetch(ref, task_id)
        if timings is not None:
            timings["download"] = timings.get("download", 0.0) + time.perf_counter() - t0
        try:
            return decode_image(fetched.data, max_pixels=self.settings.max_pixels)
        except ImageError as exc:
            raise ImageError(f"{exc} (from {fetched.url})") from None

    def _predict_task(self, task: dict[str, Any], schema: Schema, adapted: Mapping[tuple[str, str], tuple[Technique, float, int]],
                      context: Mapping[str, Any] | None, timings: dict[str, float] | None = None) -> TaskOutcome:
        seg = Segmenter(self.config, net=self.net, threads=self.settings.cut_threads)
        key = (str(task.get("id")), str((task.get("data") or {}).get(schema.value_key)))
        cached = self._images.get(key)
        if cached is not None:  # the annotator's next prompt on the same image: no download, no CNN
            seg.set_image(cached[0], cnn=cached[1])
        else:
            cnn = seg.set_image(self.load_image(task, schema, timings))
            self._images.put(key, (seg.image, cnn))
        h, w = seg.image.shape[:2]
        out = TaskOutcome()
        if context is not None:
            out.mode = "interactive"
            self._interactive(seg, context["result"], schema, adapted, out)
            return out
        boxes = self._task_boxes(task, schema)
        if boxes:
            out.mode = "boxes"
            self._box_regions(seg, [(label, self._to_px(pct, w, h)) for label, pct in boxes], adapted, schema, out)
            return out
        tags = self._task_tags(task, schema)
        if tags:
            out.mode = "tags"
            wanted = []
            for tag in tags:
                cls = self.labels.resolve(tag)
                if cls is None:
                    out.warnings.append(f"tag {tag!r} has no engine class and no box: no mask made for it")
                    continue
                wanted.append((self._brush_label(tag, cls, schema, out), cls, None))
            self._class_regions(seg, wanted, adapted, out)
            return out
        out.mode = "guess"
        guesses = seg.predict_classes(self.settings.min_class_probability, self.settings.max_classes)
        if not guesses:
            out.warnings.append(f"no class reached probability {self.settings.min_class_probability:g}: nothing to segment")
        wanted = []
        for g in guesses:
            label = self.labels.brush_label_for(g.voc_class, list(schema.brush_labels))
            if label is None:
                out.warnings.append(f"the CNN sees {g.voc_class!r} (p={g.probability:.2f}) but BrushLabels has no label for it")
                continue
            wanted.append((label, g.voc_class, g.probability))
        self._class_regions(seg, wanted, adapted, out)
        return out

    # -- prompts ------------------------------------------------------------------------------
    def _brush_label(self, label: str, voc_class: str | None, schema: Schema, out: TaskOutcome) -> str:
        labels = list(schema.brush_labels)
        for lab in labels:
            if lab.lower() == label.lower():
                return lab
        if voc_class is not None:
            lab2 = self.labels.brush_label_for(voc_class, labels)
            if lab2 is not None:
                return lab2
        if labels:
            out.warnings.append(f"label {label!r} is not one of the BrushLabels labels; the mask keeps it")
        return label

    def _box_regions(self, seg: Segmenter, boxes: list[tuple[str, tuple[float, float, float, float]]],
                     adapted: Mapping[tuple[str, str], tuple[Technique, float, int]], schema: Schema, out: TaskOutcome,
                     seeds: Seeds | None = None) -> None:
        """One mask per (label, pixel box); the engine runs the boxes concurrently."""
        prompts = []
        for label, px in boxes:
            cls = self.labels.resolve(label) if label else None
            if cls is None:
                tech = Technique("grabcut")
                out.warnings.append(f"label {label!r} has no engine class: naked GrabCut from its box")
            else:
                tech = self.technique_for(adapted, "box", cls)
            prompts.append(BoxPrompt(Box(*px), cls, tech, seeds))
        for (label, px), prompt, res in zip(boxes, prompts, seg.segment_boxes(prompts, agreement=True)):
            if isinstance(res, BoxError):
                out.warnings.append(f"box of {label!r} skipped: {res}")
                continue
            if isinstance(res, Exception):
                raise res
            cls = prompt.voc_class
            out.regions.append(Region(self._brush_label(label, cls, schema, out) if label else schema.brush_labels[0],
                                      cls, "box", res.mask, prompt.technique, res.score, px, res.fallback))

    def _class_regions(self, seg: Segmenter, wanted: list[tuple[str, str, float | None]],
                       adapted: Mapping[tuple[str, str], tuple[Technique, float, int]], out: TaskOutcome) -> None:
        """One mask per (label, class, given score); a given score (the CNN's probability of a
        guessed class) replaces the second opinion. The engine runs the classes concurrently."""
        techs = [self.technique_for(adapted, "class", cls) for _, cls, _ in wanted]
        quality = any(score is None for _, _, score in wanted)
        results = seg.segment_classes([(cls, t) for (_, cls, _), t in zip(wanted, techs)], agreement=quality)
        for (label, cls, score), tech, res in zip(wanted, techs, results):
            if isinstance(res, Exception):
                raise res
            if not res.mask.any():
                out.warnings.append(f"class {cls!r}: empty mask ({res.fallback or 'no foreground'})")
                continue
            out.regions.append(Region(label, cls, "class", res.mask, tech, res.score if score is None else score, None, res.fallback))

    @staticmethod
    def _results_of(task: Mapping[str, Any]) -> list[list[dict[str, Any]]]:
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

    def _task_boxes(self, task: dict[str, Any], schema: Schema) -> list[tuple[str, tuple[float, float, float, float]]]:
        if not schema.rect_from:
            return []
        lists = self._results_of(task)
        if not lists and "annotations" not in task and "predictions" not in task:
            lists = self._results_of(self._task_from_ls(task))
        for results in lists:
            boxes = [self._rect_box(r, task) for r in results if r.get("from_name") in schema.rect_from and r.get("type", "").lower() in ("rectanglelabels", "rectangle")]
            if boxes:
                return boxes
        return []

    def _task_from_ls(self, task: Mapping[str, Any]) -> dict[str, Any]:
        """LS did not send the task's annotations/predictions: read them through its API."""
        tid = task.get("id")
        if not isinstance(tid, int) or not self.fetcher.client.configured or not self.fetcher.client.api_key:
            return {}
        try:
            full = self.fetcher.client.get_json(f"/api/tasks/{tid}")
            if not isinstance(full, dict):
                return {}
            if "predictions" not in full:
                preds = self.fetcher.client.get_json("/api/predictions/", {"task": tid})
                full["predictions"] = preds if isinstance(preds, list) else (preds or {}).get("results", [])
            return full
        except FetchError as exc:
            log.warning("task %s: cannot read its boxes from Label Studio: %s", tid, exc)
            return {}

    @staticmethod
    def _rect_box(r: Mapping[str, Any], task: Mapping[str, Any]) -> tuple[str, tuple[float, float, float, float]]:
        """(label, percent box (x0, y0, x1, y1)) of a rectangle result; rotation -> its bounding box."""
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
            return label, (min(xs) * 100 / ow, min(ys) * 100 / oh, max(xs) * 100 / ow, max(ys) * 100 / oh)
        return label, (x, y, x + bw, y + bh)

    def _task_tags(self, task: Mapping[str, Any], schema: Schema) -> list[str]:
        for results in self._results_of(task):
            tags = [str(c) for r in results if r.get("from_name") in schema.choices_from
                    for c in (r.get("value") or {}).get("choices") or []]
            if tags:
                return list(dict.fromkeys(tags))
        data = task.get("data") or {}
        for name in self.settings.tag_fields:
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

    def _interactive(self, seg: Segmenter, items: list[Any], schema: Schema,
                     adapted: Mapping[tuple[str, str], tuple[Technique, float, int]], out: TaskOutcome) -> None:
        h, w = seg.image.shape[:2]
        boxes: list[tuple[str, tuple[float, float, float, float]]] = []
        pos_pts: list[tuple[float, float]] = []
        neg_pts: list[tuple[float, float]] = []
        pos_mask = np.zeros((h, w), bool)
        neg_mask = np.zeros((h, w), bool)
        label = ""
        for r in items:
            if not isinstance(r, dict):
                continue
            kind = str(r.get("type", "")).lower()
            v = r.get("value") or {}
            positive = r.get("is_positive", v.get("is_positive", True)) not in (False, 0, "false", "False")
            if kind in ("rectanglelabels", "rectangle"):
                lab, pct = self._rect_box(r, {"id": None})
                boxes.append((lab, pct))
                label = label or lab
            elif kind in ("keypointlabels", "keypoint"):
                try:
                    pt = (float(v["x"]) * w / 100.0, float(v["y"]) * h / 100.0)
                except (KeyError, TypeError, ValueError):
                    raise TaskError("keypoint without numeric x/y in the interactive context") from None
                (pos_pts if positive else neg_pts).append(pt)
                labs = v.get("keypointlabels") or []
                if positive and labs:
                    label = label or str(labs[0])
            elif kind in ("brushlabels", "brush"):
                ow, oh = int(r.get("original_width") or w), int(r.get("original_height") or h)
                rle = v.get("rle")
                if not isinstance(rle, list) or not rle:
                    raise TaskError("brush stroke without an RLE in the interactive context")
                m = _resize_mask(rle_to_mask(rle, oh, ow), h, w)
                (pos_mask if positive else neg_mask).__ior__(m)
                labs = v.get("brushlabels") or []
                if positive and labs:
                    label = label or str(labs[0])
        seeds = Seeds(tuple(pos_pts), tuple(neg_pts), pos_mask if pos_mask.any() else None, neg_mask if neg_mask.any() else None)
        if boxes:
            self._box_regions(seg, [(lab or label, self._to_px(pct, w, h)) for lab, pct in boxes], adapted, schema, out, seeds)
            return
        if seeds.is_empty():
            raise TaskError("the interactive context has no rectangle, keypoint or brush stroke on the image")
        cls = self.labels.resolve(label) if label else None
        if label and cls is None:
            out.warnings.append(f"label {label!r} has no engine class: GrabCut from the clicks alone")
        tech = self.technique_for(adapted, "class", cls) if cls else self.config.class_technique
        res = seg.segment_seeds(seeds, cls, tech)
        if not res.mask.any():
            out.warnings.append(f"no mask from the clicks ({res.fallback or 'empty'}); add a positive click")
            return
        name = self._brush_label(label, cls, schema, out) if label else schema.brush_labels[0] if schema.brush_labels else "object"
        out.regions.append(Region(name, cls, "seeds", res.mask, tech, res.score, None, res.fallback))

    @staticmethod
    def _to_px(pct: tuple[float, float, float, float], w: int, h: int) -> tuple[float, float, float, float]:
        return (pct[0] * w / 100.0, pct[1] * h / 100.0, pct[2] * w / 100.0, pct[3] * h / 100.0)

    # -- correction loop --------------------------------------------------------------------------
    def fit(self, event: str, data: Mapping[str, Any]) -> dict[str, Any]:
        project_obj = data.get("project") or {}
        project = str(project_obj.get("id")) if isinstance(project_obj, dict) and project_obj.get("id") is not None else ""
        if event == "START_TRAINING":
            return {"status": "ok", "detail": "camcut adapts thresholds from each submitted annotation; nothing to train"}
        if event == "ANNOTATION_DELETED":
            anns = data.get("annotations") or ([data["annotation"]] if isinstance(data.get("annotation"), dict) else [])
            if not isinstance(anns, list):
                raise TaskError(f"{event} payload: 'annotations' must be a list")
            for a in anns:
                if isinstance(a, dict) and _int64(a.get("id")) is not None and project:
                    self.store.delete_annotation(project, a["id"])
            return {"status": "deleted", "annotations": len(anns)}
        ann, task = data.get("annotation"), data.get("task")
        if not project or not isinstance(ann, dict) or not isinstance(task, dict) or _int64(ann.get("id")) is None:
            raise TaskError(f"{event} payload needs project.id, annotation.id (an integer) and task")
        label_config = project_obj.get("label_config") or ""
        updated_at = str(ann.get("updated_at") or ann.get("created_at") or "")
        status = self.store.claim_event(project, ann["id"], updated_at, _int64(task.get("id")), event)
        if status != "new":
            return {"status": status, "annotation": ann["id"]}
        if self.settings.webhook_sync:
            return self._process_correction(project, label_config, ann, task, updated_at)
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="camcut-adapt")
        self._pool.submit(self._process_correction, project, label_config, ann, task, updated_at)
        return {"status": "queued", "annotation": ann["id"]}

    def _process_correction(self, project: str, label_config: str, ann: Mapping[str, Any], task: Mapping[str, Any],
                            updated_at: str) -> dict[str, Any]:
        aid = int(ann["id"])
        try:
            result = self._score_correction(project, label_config, ann, task)
        except Exception as exc:  # background job: record, never raise into the pool
            msg = redact(f"{type(exc).__name__}: {exc}", self.secrets)
            log.warning("annotation %s of project %s: correction not used: %s", aid, project, msg)
            self.store.finish_event(project, aid, updated_at, "error", msg)
            return {"status": "error", "annotation": aid, "error": msg}
        if ann.get("was_cancelled") or not result:
            self.store.finish_event(project, aid, updated_at, "ignored", "no brush mask with an engine class")
            return {"status": "ignored", "annotation": aid}
        self.store.save_corrections(project, aid, updated_at, result)
        self.store.finish_event(project, aid, updated_at, "processed", f"{len(result)} region(s)")
        log.info("annotation %s of project %s: %d correction(s) scored; model version %s", aid, project, len(result), self.model_version(project))
        return {"status": "processed", "annotation": aid, "corrections": len(result), "model_version": self.model_version(project)}

    def _score_correction(self, project: str, label_config: str, ann: Mapping[str, Any], task: Mapping[str, Any]) -> list[Correction]:
        if ann.get("was_cancelled"):
            return []
        schema = parse_schema(label_config)
        results = ann.get("result") or []
        brush = [r for r in results if isinstance(r, dict) and r.get("from_name") == schema.brush_from
                 and str(r.get("type", "")).lower() in ("brushlabels", "brush") and (r.get("value") or {}).get("rle")]
        if not brush:
            return []
        img = self.load_image(task, schema)
        h, w = img.shape[:2]
        task_id = int(task.get("id") or 0)
        predicted = {p.region_id: p for p in self.store.predictions_for(project, task_id)}
        rects = []
        for r in results:
            if isinstance(r, dict) and r.get("from_name") in schema.rect_from:
                lab, pct = self._rect_box(r, task)
                rects.append((self.labels.resolve(lab), self._to_px(pct, w, h)))
        # (region key, voc class, label, corrected mask, prediction or None, box or None)
        items: list[tuple[str, str, str, np.ndarray, PredictedRegion | None, tuple[float, ...] | None]] = []
        for r in brush:
            v = r["value"]
            label = str((v.get("brushlabels") or [""])[0])
            cls = self.labels.resolve(label)
            if cls is None:
                continue
            oh, ow = int(r.get("original_height") or h), int(r.get("original_width") or w)
            mask = _resize_mask(rle_to_mask(v["rle"], oh, ow), h, w)
            pred = predicted.get(str(r.get("id")))
            if pred is None:
                same = [p for p in predicted.values() if p.voc_class == cls and p.kind in ("box", "class")]
                ious = [adapt.iou(_resize_mask(rle_to_mask(p.rle, p.height, p.width), h, w), mask) for p in same]
                if ious and max(ious) > 0:
                    pred = same[int(np.argmax(ious))]
            box = pred.box if pred is not None and pred.kind == "box" else None
            if pred is None and rects:
                # no prediction to compare with: the annotation's own box of that class, most overlapped
                cands = [b for c, b in rects if c == cls]
                overlaps = [mask[int(b[1]):int(math.ceil(b[3])), int(b[0]):int(math.ceil(b[2]))].sum() for b in cands]
                if cands and max(overlaps) > 0:
                    box = cands[int(np.argmax(overlaps))]
            items.append((str(pred.region_id if pred else r.get("id")), cls, label, mask, pred, box))
        if not items:
            return []
        seg = Segmenter(self.config, net=self.net)
        seg.set_image(img)
        corrections: list[Correction] = []
        # class prompts: the class mask covers every instance, so union the class's strokes
        class_groups: dict[str, list[int]] = {}
        for i, it in enumerate(items):
            if it[5] is None:
                class_groups.setdefault(it[1], []).append(i)
        for i, (key, cls, label, mask, pred, box) in enumerate(items):
            if box is not None:
                prompt, corrected, kind = adapt.Prompt(cls, Box(*box)), mask, "box"
            elif class_groups.get(cls, [None])[0] == i:
                corrected = np.logical_or.reduce([items[j][3] for j in class_groups[cls]])
                prompt, kind = adapt.Prompt(cls, others=tuple(c for c in class_groups if c != cls)), "class"
            else:
                continue
            scores = adapt.score_candidates(seg, prompt, corrected, self.candidates(kind))
            pred_iou = None
            if pred is not None:
                pm = _resize_mask(rle_to_mask(pred.rle, pred.height, pred.width), h, w)
                pred_iou = adapt.iou(pm, corrected)
            corrections.append(Correction(key, task_id, kind, cls, label, pred.technique if pred else None, pred_iou,
                                          {t.label: v for t, v in scores.items()}))
        return corrections

    def metrics(self) -> dict[str, Any]:
        stats = self.store.stats()
        for project, entry in stats.items():
            entry["model_version"] = self.model_version(project)
            entry["adapted"] = {f"{k}:{c}": {"technique": t.label, "mean_iou": round(m, 4), "corrections": n}
                                for (k, c), (t, m, n) in self.adapted(project).items()}
        return {
            "engine": self.config.version_key,
            "weights_sha256": self.net.weights.sha256,
            "label_map": self.labels.version,
            "min_corrections": self.settings.min_corrections,
            "projects": stats,
        }

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
