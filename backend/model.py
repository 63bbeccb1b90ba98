"""The camcut model behind the Label Studio ML backend protocol: runs one request (web-free;
``backend/app.py`` is the Flask layer). See ``backend/config.py`` for what each mode does.

The pieces: the labelling config (``schema.py``), LS's result format (``results.py``), task ->
prompts (``prompts.py``), the correction loop (``corrections.py``), LS's API (``labelstudio.py``).
This module only orchestrates: model version, image cache, one Segmenter call per prompt kind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model import (
    Box,
    BoxError,
    BoxPrompt,
    CamNet,
    ImageError,
    Seeds,
    Segmenter,
    Technique,
    UnknownClassError,
    adapt,
    decode_image,
)
from model import voc as voc_module
from model.cnn import renormalised
from model.engine import CnnOutput, EngineConfig, get_config
from model.overlaps import evidence_maps, resolve_overlaps
from model.refine import subtract_negatives
from model.scores import honest_score
from model.segmenter import MaskResult, mask_iou
from model.techniques import ThresholdError

from .config import Settings
from .corrections import TRAIN_EVENTS, CorrectionLoop
from .errors import SchemaError, TaskError
from .fetch import FetchError, ImageFetcher
from .labels import LabelMap
from .labelstudio import LabelStudioError
from .prompts import LabeledBox, WantedClass, int64, interactive_prompt, is_interactive_context, task_boxes, task_tags
from .redaction import RedactingFilter, redact
from .results import EncodedMask, brush_result, decode_brush, failed_prediction, mask_to_rle, rle_to_mask, task_prediction
from .schema import Schema, parse_schema
from .store import PredictedRegion, Store
from .version_sync import VersionSync

# The names app.py, bulk and older callers import from here.
__all__ = [
    "TRAIN_EVENTS",
    "AdaptedTechnique",
    "CamCutModel",
    "ImageCache",
    "Region",
    "SchemaError",
    "TaskError",
    "TaskOutcome",
    "is_interactive_context",
    "mask_to_rle",
    "parse_schema",
    "rle_to_mask",
]

log = logging.getLogger("backend.model")


@dataclass(frozen=True)
class AdaptedTechnique:
    """The technique the corrections of a project chose for one (kind, VOC class)."""

    technique: Technique
    mean_iou: float
    corrections: int


# (kind "box" | "class", VOC class) -> what its corrections chose
Adapted = Mapping[tuple[str, str], AdaptedTechnique]


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


@dataclass
class Region:
    """One mask to return, and what produced it (``box`` in pixels, for box prompts)."""

    label: str
    voc_class: str | None
    kind: str
    # encoded as soon as the cut finishes (a request never holds its full-size masks), except box
    # masks while their overlaps are resolved (see CamCutModel._box_regions)
    mask: np.ndarray | EncodedMask
    technique: Technique
    score: float
    box: tuple[float, float, float, float] | None = None
    fallback: str | None = None


@dataclass
class TaskOutcome:
    regions: list[Region] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    mode: str = ""
    empty: list[dict[str, Any]] = field(default_factory=list)  # classes with no pixels here: a result, not an error


OVERLAP_BUDGET_PIXELS = 64_000_000  # boxes x image pixels up to which a task's box overlaps are resolved (64 MB of masks)
FAILURES_KEPT = 50  # failed tasks listed by /metrics (bounded: a broken storage fails every task)

# what makes one task fail with its message as the error (anything else is an "internal error")
TASK_ERRORS = (TaskError, FetchError, LabelStudioError, ImageError, BoxError, SchemaError, UnknownClassError, ValueError)


def separate_boxes(seg: Segmenter, regions: list[Region]) -> None:
    """Pixels claimed by several box masks of the task go to one (model/overlaps.py's rule)."""
    boxed = [r for r in regions if r.box is not None and isinstance(r.mask, np.ndarray) and r.mask.any()]
    raw = [r.mask for r in boxed if isinstance(r.mask, np.ndarray)]  # all of them: the filter above
    if len(boxed) < 2:
        return
    cams = []
    for r in boxed:
        x0, y0, x1, y1 = (int(round(v)) for v in r.box)  # type: ignore[union-attr]
        cams.append(seg.class_cam(r.voc_class, (x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))[0] if r.voc_class else None)
    evidence = evidence_maps(seg.image.shape[:2], [r.box for r in boxed], cams)  # type: ignore[misc]
    for r, mask in zip(boxed, resolve_overlaps(raw, evidence), strict=True):
        r.mask = mask


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
        ]
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
        seg = Segmenter(self.config, net=self.net, threads=self.settings.cut_threads)
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
            self._interactive(seg, context["result"], schema, adapted, out, lambda: self._previous(project, task.get("id")))
            return out
        boxes = task_boxes(task, schema, lambda: self._task_from_ls(task))
        self._check_boxes(len(boxes))
        if boxes:
            out.mode = "boxes"
            self._box_regions(seg, [b.to_pixels(w, h) for b in boxes], adapted, schema, out)
            return out
        tags = task_tags(task, schema, self.settings.tag_fields)
        self._check_boxes(len(tags), "tags")
        if tags:
            out.mode = "tags"
            wanted = []
            for tag in tags:
                cls = self.labels.resolve(tag)
                if cls is None:
                    out.warnings.append(f"tag {tag!r} has no engine class and no box: no mask made for it")
                    continue
                wanted.append(WantedClass(self._brush_label(tag, cls, schema, out), cls))
            self._class_regions(seg, wanted, adapted, out)
            return out
        out.mode = "guess"
        wanted = self._guesses(seg, schema, out)
        self._class_regions(seg, wanted, adapted, out)
        return out

    def _guesses(self, seg: Segmenter, schema: Schema, out: TaskOutcome) -> list[WantedClass]:
        """No prompt: the project's labels say which classes can be there, so the CNN chooses
        among their engine classes (probabilities renormalised over them): the most likely one
        always, the next ones if they reach CAMCUT_MIN_CLASS_PROBABILITY. Scored by agreement
        like tags (a renormalised probability is 1.0 for a one-class project: no quality signal).
        A project none of whose labels has an engine class gets the CNN's own guess as before."""
        labels = list(schema.brush_labels)
        project = sorted({c for lab in labels if (c := self.labels.resolve(lab)) is not None})
        p_min = self.settings.min_class_probability
        if project:
            ranked = renormalised(seg.class_probabilities(), project)
            picked = [g for g in ranked[: self.settings.max_classes] if g.probability >= p_min] or ranked[:1]
            return [WantedClass(self.labels.brush_label_for(g.voc_class, labels) or g.voc_class, g.voc_class) for g in picked]
        guesses = seg.predict_classes(p_min, self.settings.max_classes)
        if not guesses:
            out.warnings.append(f"no class reached probability {p_min:g}: nothing to segment")
        wanted = []
        for g in guesses:
            label = self.labels.brush_label_for(g.voc_class, labels)
            if label is None:
                out.warnings.append(f"the CNN sees {g.voc_class!r} (p={g.probability:.2f}) but BrushLabels has no label for it")
                continue
            wanted.append(WantedClass(label, g.voc_class, g.probability))
        return wanted

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

    def _check_boxes(self, n: int, what: str = "boxes") -> None:
        if n > self.settings.max_boxes:
            raise TaskError(f"the task has {n} {what}, more than CAMCUT_MAX_BOXES={self.settings.max_boxes}")

    def _box_regions(
        self,
        seg: Segmenter,
        boxes: list[LabeledBox],
        adapted: Adapted,
        schema: Schema,
        out: TaskOutcome,
        seeds: Seeds | None = None,
    ) -> None:
        """One mask per labelled pixel box; the engine runs the boxes concurrently, a few at a
        time (see :meth:`_chunks`), each mask encoded as soon as its chunk is done."""
        prompts, techs = [], []
        for b in boxes:
            cls = self.labels.resolve(b.label) if b.label else None
            if cls is None:
                tech = Technique("grabcut")
                out.warnings.append(f"label {b.label!r} has no engine class: naked GrabCut from its box")
            else:
                tech = self.technique_for(adapted, "box", cls)
            prompts.append(BoxPrompt(Box(*b.box), cls, tech, seeds))
            techs.append(tech)
        # Overlapping boxes are resolved on the raw masks of the task together (model/overlaps.py),
        # which costs a full-size mask per box: done while that stays under OVERLAP_BUDGET_PIXELS;
        # past it (e.g. 100 boxes on a 40 MP image) masks are encoded as they finish and keep their overlaps.
        h, w = seg.image.shape[:2]
        resolve = 1 < len(prompts) and len(prompts) * h * w <= OVERLAP_BUDGET_PIXELS
        regions: dict[int, Region] = {}
        for i, res in self._chunks(seg, prompts):
            b, cls, tech = boxes[i], prompts[i].voc_class, techs[i]
            if isinstance(res, BoxError):
                out.warnings.append(f"box of {b.label!r} skipped: {res}")
                continue
            if isinstance(res, Exception):
                raise res
            score = self._classless_agreement(seg, b, res.mask, schema) if cls is None and not res.fallback else res.score
            mask: np.ndarray | EncodedMask = res.mask if resolve else EncodedMask.of(res.mask)
            regions[i] = Region(
                self._brush_label(b.label, cls, schema, out) if b.label else schema.brush_labels[0],
                cls,
                "box",
                mask,
                tech,
                honest_score(score, res.mask, res.fallback),
                b.box,
                res.fallback,
            )
        ordered = [regions[i] for i in sorted(regions)]  # in box order
        if resolve:
            separate_boxes(seg, ordered)
            for r in ordered:
                r.mask = EncodedMask.of(r.mask) if isinstance(r.mask, np.ndarray) else r.mask
        out.regions.extend(ordered)

    def _classless_agreement(self, seg: Segmenter, b: LabeledBox, mask: np.ndarray, schema: Schema) -> float:
        """A box whose label has no engine class (naked GrabCut) has no second opinion of its
        own; its agreement is with the CAM box technique for the project's class whose CAM is
        strongest in the box. 0 when the project has no engine class."""
        classes = sorted({c for lab in schema.brush_labels if (c := self.labels.resolve(lab)) is not None})
        x0, y0, x1, y1 = (int(round(v)) for v in b.box)
        if not classes or x1 <= x0 or y1 <= y0:
            return 0.0
        best = max(classes, key=lambda c: float(seg.raw_class_cam(c)[y0:y1, x0:x1].max(initial=0.0)))
        alt = seg.segment_box(Box(*b.box), best, Technique("fpf", 0.6))
        return 0.0 if alt.fallback else mask_iou(mask, alt.mask)

    def _chunks(self, seg: Segmenter, prompts: list[BoxPrompt]) -> Iterator[tuple[int, MaskResult | Exception]]:
        """(index, result) of every box prompt. Memory bound: at most ``cut_threads`` cuts (half
        as many boxes and their second opinions) run at once, and the caller encodes each mask before the next
        ones start, so a request holds a few full-size masks, not two per box (100 boxes on a
        36 MP image held 7.6 GB). Boxes go class by class and a class's upsampled CAM is dropped
        after its last box (a 40 MP float32 CAM is 160 MB)."""
        order = sorted(range(len(prompts)), key=lambda i: str(prompts[i].voc_class))
        step = max(1, self.settings.cut_threads // 2)  # a box is two cuts (its mask, its second opinion)
        for k in range(0, len(order), step):
            idx = order[k : k + step]
            yield from zip(idx, seg.segment_boxes([prompts[i] for i in idx], agreement=True), strict=True)
            if k + step >= len(order) or prompts[order[k + step]].voc_class != prompts[idx[-1]].voc_class:
                seg.forget_cams()

    def _class_regions(self, seg: Segmenter, wanted: list[WantedClass], adapted: Adapted, out: TaskOutcome) -> None:
        """One mask per wanted class; a given probability (of a guessed class) replaces the
        second opinion. The engine runs the classes concurrently, ``cut_threads // 2`` at a time
        (each mask encoded before the next start; ``others`` keeps every tag a rival, as in one call)."""
        techs = [self.technique_for(adapted, "class", w.voc_class) for w in wanted]
        quality = any(w.probability is None for w in wanted)
        classes = [w.voc_class for w in wanted]
        step = max(1, self.settings.cut_threads // 2)

        def chunked() -> Iterator[MaskResult | Exception]:
            for k in range(0, len(wanted), step):
                yield from seg.segment_classes(
                    list(zip(classes[k : k + step], techs[k : k + step], strict=True)),
                    agreement=quality,
                    others=classes[:k] + classes[k + step :],
                )
                seg.forget_cams()  # a 40 MP CAM is 160 MB; the next classes need their own

        for w, tech, res in zip(wanted, techs, chunked(), strict=True):
            if isinstance(res, Exception):
                raise res
            score = honest_score(res.score if w.probability is None else w.probability, res.mask, res.fallback)
            if not res.mask.any():  # a finding ("no pixels of this class here"), not a failure of the task
                reason = res.fallback or "no foreground"
                out.warnings.append(f"class {w.voc_class!r}: empty mask ({reason})")
                out.empty.append({"label": w.label, "voc_class": w.voc_class, "score": round(float(score), 4), "reason": reason})
                continue
            out.regions.append(Region(w.label, w.voc_class, "class", EncodedMask.of(res.mask), tech, score, None, res.fallback))

    def _interactive(
        self,
        seg: Segmenter,
        items: list[Any],
        schema: Schema,
        adapted: Adapted,
        out: TaskOutcome,
        previous: Callable[[], list[PredictedRegion]] = list,
    ) -> None:
        h, w = seg.image.shape[:2]
        prompt = interactive_prompt(items, w, h, self.settings.max_pixels)
        label, seeds = prompt.label, prompt.seeds
        self._check_boxes(len(prompt.boxes))
        if prompt.boxes:
            pixel_boxes = [LabeledBox(b.label or label, b.box).to_pixels(w, h) for b in prompt.boxes]
            self._box_regions(seg, pixel_boxes, adapted, schema, out, seeds)
            return
        if seeds.is_empty():
            raise TaskError("the interactive context has no rectangle, keypoint or brush stroke on the image")
        if not seeds.positive_points and seeds.positive_mask is None:
            self._negative_only(seg, seeds, previous(), adapted, out)
            return
        cls = self.labels.resolve(label) if label else None
        if label and cls is None:
            out.warnings.append(f"label {label!r} has no engine class: GrabCut from the clicks alone")
        tech = self.technique_for(adapted, "class", cls) if cls else self.config.class_technique
        res = seg.segment_seeds(seeds, cls, tech)
        if not res.mask.any():
            out.warnings.append(f"no mask from the clicks ({res.fallback or 'empty'}); add a positive click")
            return
        name = (
            self._brush_label(label, cls, schema, out) if label else schema.brush_labels[0] if schema.brush_labels else "object"
        )
        out.regions.append(
            Region(
                name,
                cls,
                "seeds",
                EncodedMask.of(res.mask),
                tech,
                honest_score(res.score, res.mask, res.fallback),
                None,
                res.fallback,
            )
        )

    def _previous(self, project: str, task_id: Any) -> list[PredictedRegion]:
        tid = int64(task_id)
        return self.store.predictions_for(project, tid) if tid is not None else []

    def _negative_only(
        self, seg: Segmenter, seeds: Seeds, previous: list[PredictedRegion], adapted: Adapted, out: TaskOutcome
    ) -> None:
        """Alt-click alone: cut the clicked part out of the newest mask camcut gave the task that
        contains a negative seed (model/refine.py)."""
        h, w = seg.image.shape[:2]
        _, neg = seeds.rasterize(h, w)
        for r in reversed(previous):
            mask = decode_brush(r.rle, r.height, r.width, h, w)
            if (mask & neg).any():
                tech = self.technique_for(adapted, "class", r.voc_class) if r.voc_class else self.config.class_technique
                new, score = subtract_negatives(seg, mask, seeds, r.voc_class, tech)
                if not new.any():
                    out.warnings.append(f"the negative click removed all of the {r.label!r} mask")
                    return
                out.regions.append(Region(r.label, r.voc_class, "seeds", EncodedMask.of(new), tech, score, r.box, None))
                return
        raise TaskError(
            "a negative click alone needs a mask under it to cut from: no mask camcut predicted for this task"
            " contains the click; add a positive click"
        )

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
