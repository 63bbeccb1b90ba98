"""The camcut model behind the Label Studio ML backend protocol: runs one request (web-free;
``backend/app.py`` is the Flask layer). See ``backend/config.py`` for what each mode does.

The pieces: the labelling config (``schema.py``), LS's result format (``results.py``), task ->
prompts (``prompts.py``), prompts -> masks (``regions.py``), the correction loop
(``corrections.py``), LS's API (``labelstudio.py``). This module only orchestrates: model
version, image cache, the predict loop, failures and metrics.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from model import (
    BoxError,
    CamNet,
    ImageError,
    Segmenter,
    Technique,
    UnknownClassError,
    adapt,
    decode_image,
)
from model import voc as voc_module
from model.engine import CnnOutput, EngineConfig, get_config
from model.techniques import ThresholdError

from .config import Settings
from .corrections import TRAIN_EVENTS, CorrectionLoop
from .errors import SchemaError, TaskError
from .fetch import FetchError, ImageFetcher
from .labels import LabelMap
from .labelstudio import LabelStudioError
from .learning import Learner
from .prompts import WantedClass, int64, is_interactive_context, task_boxes, task_tags
from .redaction import RedactingFilter, redact
from .regions import OVERLAP_BUDGET_PIXELS, Adapted, AdaptedTechnique, Region, RegionMaker, TaskOutcome, separate_boxes
from .results import brush_result, failed_prediction, mask_to_rle, rle_to_mask, task_prediction
from .schema import Schema, parse_schema
from .store import PredictedRegion, Store
from .version_sync import VersionSync

# The names app.py, bulk and older callers import from here.
__all__ = [
    "TRAIN_EVENTS",
    "AdaptedTechnique",
    "CamCutModel",
    "ImageCache",
    "OVERLAP_BUDGET_PIXELS",
    "Region",
    "SchemaError",
    "TaskError",
    "TaskOutcome",
    "is_interactive_context",
    "mask_to_rle",
    "parse_schema",
    "rle_to_mask",
    "separate_boxes",
]

log = logging.getLogger("backend.model")


@dataclass(frozen=True)
class CachedImage:
    image: np.ndarray
    cnn: CnnOutput


class ImageCache:
    """The last few decoded images and their CNN outputs, keyed by (task id, image URL).

    Interactive pre-annotation sends one /predict per prompt on the same task; like
    SamPredictor's set_image, the image is fetched and the CNN run once, then each prompt is
    cheap. Bounded by entries and by pixels so that large photos cannot exhaust memory.
    """

    def __init__(self, max_entries: int = 8, max_pixels: int = 40_000_000) -> None:
        self.max_entries, self.max_pixels = max_entries, max_pixels
        self._items: OrderedDict[tuple[str, str], CachedImage] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> CachedImage | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: tuple[str, str], item: CachedImage) -> None:
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while self._items and (
                len(self._items) > self.max_entries
                or sum(i.image.shape[0] * i.image.shape[1] for i in self._items.values()) > self.max_pixels
            ):
                self._items.popitem(last=False)


FAILURES_KEPT = 50  # failed tasks listed by /metrics (bounded: a broken storage fails every task)

# what makes one task fail with its message as the error (anything else is an "internal error")
TASK_ERRORS = (TaskError, FetchError, LabelStudioError, ImageError, BoxError, SchemaError, UnknownClassError, ValueError)


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
        self.net = net or CamNet(settings.weights or None, num_threads=settings.torch_threads or None)
        self.labels = LabelMap.from_file(settings.label_map)
        self.regions = RegionMaker(settings, self.labels, self.config, self.technique_for)  # prompts -> masks
        self.store = Store(settings.model_dir, settings.database_url)
        # learned heads (backend/learning.py)
        self.learner = Learner(self.store, self.config.cut == "featcut", settings.head_min_corrections)
        self.fetcher = fetcher or ImageFetcher(settings)
        self.corrections = CorrectionLoop(self)
        self.version_sync = VersionSync(self.fetcher.client)  # LS's project model_version follows ours
        self._images = ImageCache()
        self.failures: deque[dict[str, Any]] = deque(maxlen=FAILURES_KEPT)  # the last failed tasks, for /metrics
        log.addFilter(RedactingFilter(lambda: self.secrets))

    @property
    def secrets(self) -> tuple[str, ...]:
        return self.settings.secrets

    # -- versions -----------------------------------------------------------------------------
    def default_technique(self, kind: str) -> Technique:
        return self.config.box_technique if kind == "box" else self.config.class_technique

    def candidates(self, kind: str) -> tuple[Technique, ...]:
        return adapt.candidate_techniques(self.default_technique(kind).variant, self.settings.adapt_thresholds)

    def adapted(self, project: str) -> dict[tuple[str, str], AdaptedTechnique]:
        """(kind, voc_class) -> the technique chosen from the project's corrections."""
        out: dict[tuple[str, str], AdaptedTechnique] = {}
        for (kind, cls), scores in self.store.technique_scores(project).items():
            allowed = {t.label: t for t in self.candidates(kind)}
            default = self.default_technique(kind).label
            pick = adapt.choose_technique(
                {k: v for k, v in scores.items() if k in allowed}, self.settings.min_corrections, default
            )
            if pick is not None:
                out[(kind, cls)] = AdaptedTechnique(allowed[pick[0]], pick[1], pick[2])
        return out

    def technique_for(self, adapted: Adapted, kind: str, voc_class: str) -> Technique:
        if (kind, voc_class) in adapted:
            return adapted[(kind, voc_class)].technique
        return self.default_technique(kind)

    def model_version(self, project: str, adapted: Adapted | None = None) -> str:
        adapted = self.adapted(project) if adapted is None else adapted
        parts = [
            self.config.version_key,
            self.net.weights.sha256,
            voc_module.MAPPING_VERSION,
            self.labels.version,
            json.dumps(sorted(f"{k}:{c}={a.technique.label}" for (k, c), a in adapted.items())),
            f"tag_work_pixels={self.settings.tag_work_pixels}",  # tags on larger images are cut at that size
        ]
        head = self.learner.version(project)
        if head:  # a project without an accepted head keeps the training-free version exactly
            parts.append(head)
        digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]
        return f"camcut-{self.config.name}-{digest}"

    def setup(self, project: str, label_config: str) -> dict[str, Any]:
        parse_schema(label_config, self.settings.max_config_bytes)
        return {"model_version": self.model_version(project)}

    # -- prediction ---------------------------------------------------------------------------
    def predict(
        self,
        tasks: list[Any],
        project: str,
        label_config: str,
        context: Mapping[str, Any] | None,
        timings: dict[str, float] | None = None,
    ) -> list[dict[str, Any]]:
        """One prediction per task, in order. ``timings``, if given, receives the seconds spent
        downloading images ("download"), which the HTTP layer reports in Server-Timing."""
        schema = parse_schema(label_config, self.settings.max_config_bytes)
        adapted = self.adapted(project)
        version = self.model_version(project, adapted)
        interactive = is_interactive_context(context)
        out = []
        for task in tasks:
            task_id = task.get("id") if isinstance(task, dict) else None
            try:
                if not isinstance(task, dict):
                    raise TaskError(f"a task must be a JSON object, got {type(task).__name__}")
                outcome = self._predict_task(task, schema, adapted, context if interactive else None, timings, project)
            except TASK_ERRORS as exc:
                msg = redact(str(exc), self.secrets)
                log.warning("task %s: %s", task_id, msg)
                out.append(self._failed(project, task_id, failed_prediction(version, msg), interactive))
                continue
            except Exception as exc:  # hostile/garbage task data must not fail the other tasks of the batch
                msg = redact(f"internal error on this task ({type(exc).__name__}: {exc})", self.secrets)
                log.exception("task %s: %s", redact(repr(task_id)[:80], self.secrets), msg)
                out.append(self._failed(project, task_id, failed_prediction(version, msg), interactive))
                continue
            results = [
                brush_result(r.mask, r.label, r.score, schema, r.technique.label, r.voc_class, r.fallback)
                for r in outcome.regions
            ]
            stored_id = int64(task_id)
            if stored_id is not None and results:
                self.store.save_predictions(
                    project,
                    stored_id,
                    version,
                    [
                        PredictedRegion(
                            res["id"],
                            r.label,
                            r.voc_class,
                            r.kind,
                            r.box,
                            r.technique.label,
                            res["original_width"],
                            res["original_height"],
                            res["value"]["rle"],
                        )
                        for r, res in zip(outcome.regions, results, strict=True)
                    ],
                    replace=not interactive,
                )
            for w in outcome.warnings:
                log.warning("task %s: %s", task_id, w)
            pred = task_prediction(results, version, outcome.mode, outcome.warnings, outcome.empty)
            if outcome.mode == "guess" and not results:
                pred.pop("error", None)  # "no class here" is the answer for this image, not a failure
            out.append(self._failed(project, task_id, pred, interactive) if "error" in pred else pred)
        if not interactive:
            self.version_sync.schedule(project, version)
        return out

    def _failed(self, project: str, task_id: Any, pred: dict[str, Any], interactive: bool) -> dict[str, Any]:
        """A failed task: remembered for /metrics, and answered without ``result`` outside the
        interactive mode: LS 1.23 (ml/models.py _get_predictions_from_ml_backend) skips a
        response without ``result``, so no empty prediction is stored under the current model
        version and the task is predicted again on the next request, instead of showing 0.00."""
        self.failures.append(
            {
                "project": project,
                "task": int64(task_id),
                "error": str(pred.get("error"))[:500],
                "model_version": pred.get("model_version"),
                "at": round(time.time(), 3),
            }
        )
        if not interactive:
            pred.pop("result", None)
        return pred

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

    def _predict_task(
        self,
        task: dict[str, Any],
        schema: Schema,
        adapted: Adapted,
        context: Mapping[str, Any] | None,
        timings: dict[str, float] | None = None,
        project: str = "",
    ) -> TaskOutcome:
        seg = Segmenter(
            self.config, net=self.net, threads=self.settings.cut_threads, tag_work_pixels=self.settings.tag_work_pixels
        )
        seg.heads = self.learner.heads(project)  # None: the training-free model
        key = (str(task.get("id")), str((task.get("data") or {}).get(schema.value_key)))
        cached = self._images.get(key)
        if cached is not None:  # the annotator's next prompt on the same image: no download, no CNN
            seg.set_image(cached.image, cnn=cached.cnn)
        else:
            cnn = seg.set_image(self.load_image(task, schema, timings))
            self._images.put(key, CachedImage(seg.image, cnn))
        h, w = seg.image.shape[:2]
        out = TaskOutcome()
        if context is not None:
            out.mode = "interactive"
            self.regions.interactive(
                seg, context["result"], schema, adapted, out, lambda: self._previous(project, task.get("id"))
            )
            return out
        boxes = task_boxes(task, schema, lambda: self._task_from_ls(task))
        self.regions.check_boxes(len(boxes))
        if boxes:
            out.mode = "boxes"
            self.regions.box_regions(seg, [b.to_pixels(w, h) for b in boxes], adapted, schema, out)
            return out
        tags = task_tags(task, schema, self.settings.tag_fields)
        self.regions.check_boxes(len(tags), "tags")
        if tags:
            out.mode = "tags"
            wanted = []
            for tag in tags:
                cls = self.labels.resolve(tag)
                if cls is None:
                    out.warnings.append(f"tag {tag!r} has no engine class and no box: no mask made for it")
                    continue
                wanted.append(WantedClass(self.regions.brush_label(tag, cls, schema, out), cls))
            self.regions.class_regions(seg, wanted, adapted, out)
            return out
        out.mode = "guess"
        wanted = self.regions.guesses(seg, schema, out)
        self.regions.class_regions(seg, wanted, adapted, out)
        return out

    def _task_from_ls(self, task: Mapping[str, Any]) -> Mapping[str, Any]:
        """LS did not send the task's annotations/predictions: read them through its API."""
        tid = task.get("id")
        client = self.fetcher.client
        if not isinstance(tid, int) or not client.configured or not client.api_key:
            return {}
        try:
            return client.task_with_results(tid) or {}
        except LabelStudioError as exc:
            log.warning("task %s: cannot read its boxes from Label Studio: %s", tid, exc)
            return {}

    def _previous(self, project: str, task_id: Any) -> list[PredictedRegion]:
        tid = int64(task_id)
        return self.store.predictions_for(project, tid) if tid is not None else []

    # -- correction loop and metrics -------------------------------------------------------------
    def fit(self, event: str, data: Mapping[str, Any]) -> dict[str, Any]:
        return self.corrections.fit(event, data)

    def metrics(self) -> dict[str, Any]:
        stats = self.store.stats()
        for project, entry in stats.items():
            entry["model_version"] = self.model_version(project)
            entry["adapted"] = {
                f"{k}:{c}": {"technique": a.technique.label, "mean_iou": round(a.mean_iou, 4), "corrections": a.corrections}
                for (k, c), a in self.adapted(project).items()
            }
            entry["head"] = self.learner.status(project)  # samples stored, the kept head's version, the last re-fit
        return {
            "engine": self.config.version_key,
            "weights_sha256": self.net.weights.sha256,
            "label_map": self.labels.version,
            "min_corrections": self.settings.min_corrections,
            "learning": self.corrections.learning,
            "webhooks_waiting": self.corrections.inbox.waiting(),
            "projects": stats,
            "recent_failures": list(self.failures),  # this worker process's last FAILURES_KEPT, oldest first
        }

    def close(self) -> None:
        self.corrections.close()
        self.learner.close()
