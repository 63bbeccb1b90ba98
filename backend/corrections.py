"""The correction loop: LS's annotation webhooks -> scored thresholds per project and class.

Each submitted brush mask is matched with what was predicted for the task (kept in the store),
every candidate technique of the configured variant is scored against it (``model/adapt.py``)
and the scores are stored; :meth:`backend.model.CamCutModel.adapted` picks from them.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from threading import Lock
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from model import Box, Segmenter, adapt

from .errors import TaskError
from .prompts import Corners, int64, rect_box
from .redaction import redact
from .results import decode_brush
from .schema import parse_schema
from .store import Correction, PredictedRegion

if TYPE_CHECKING:
    from .model import CamCutModel

log = logging.getLogger("backend.model")  # the predictor's logger: its redaction and level apply

TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED", "START_TRAINING")


@dataclass(frozen=True)
class ClassBox:
    """A rectangle of the annotation, with its label's VOC class (None: no engine class)."""

    voc_class: str | None
    box: Corners


@dataclass(frozen=True)
class CorrectedRegion:
    """One submitted brush mask with an engine class, and what it corrects.

    ``key`` names the region in the statistics (the prediction's region id when there is one);
    ``box`` (pixels) makes it a box correction, else it corrects the class prompt."""

    key: str
    voc_class: str
    label: str
    mask: np.ndarray
    prediction: PredictedRegion | None
    box: Corners | None


class CorrectionLoop:
    """``fit`` for one model: claims each webhook event once and scores it (in the background
    unless ``CAMCUT_WEBHOOK_SYNC``)."""

    def __init__(self, model: "CamCutModel") -> None:
        self.model = model
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = Lock()

    def fit(self, event: str, data: Mapping[str, Any]) -> dict[str, Any]:
        store = self.model.store
        project_obj = data.get("project") or {}
        project = str(project_obj.get("id")) if isinstance(project_obj, dict) and project_obj.get("id") is not None else ""
        if event == "START_TRAINING":
            return {"status": "ok", "detail": "camcut adapts thresholds from each submitted annotation; nothing to train"}
        if event == "ANNOTATION_DELETED":
            anns = data.get("annotations") or ([data["annotation"]] if isinstance(data.get("annotation"), dict) else [])
            if not isinstance(anns, list):
                raise TaskError(f"{event} payload: 'annotations' must be a list")
            for a in anns:
                if isinstance(a, dict) and int64(a.get("id")) is not None and project:
                    store.delete_annotation(project, a["id"])
            return {"status": "deleted", "annotations": len(anns)}
        ann, task = data.get("annotation"), data.get("task")
        if not project or not isinstance(ann, dict) or not isinstance(task, dict) or int64(ann.get("id")) is None:
            raise TaskError(f"{event} payload needs project.id, annotation.id (an integer) and task")
        label_config = project_obj.get("label_config") or ""
        updated_at = str(ann.get("updated_at") or ann.get("created_at") or "")
        status = store.claim_event(project, ann["id"], updated_at, int64(task.get("id")), event)
        if status != "new":
            return {"status": status, "annotation": ann["id"]}
        if self.model.settings.webhook_sync:
            return self.process(project, label_config, ann, task, updated_at)
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="camcut-adapt")
        self._pool.submit(self.process, project, label_config, ann, task, updated_at)
        return {"status": "queued", "annotation": ann["id"]}

    def process(self, project: str, label_config: str, ann: Mapping[str, Any], task: Mapping[str, Any],
                updated_at: str) -> dict[str, Any]:
        """Score one claimed annotation and record the outcome; never raises (a background job)."""
        store = self.model.store
        aid = int(ann["id"])
        try:
            result = self.score(project, label_config, ann, task)
        except Exception as exc:  # background job: record, never raise into the pool
            msg = redact(f"{type(exc).__name__}: {exc}", self.model.secrets)
            log.warning("annotation %s of project %s: correction not used: %s", aid, project, msg)
            store.finish_event(project, aid, updated_at, "error", msg)
            return {"status": "error", "annotation": aid, "error": msg}
        if ann.get("was_cancelled") or not result:
            store.finish_event(project, aid, updated_at, "ignored", "no brush mask with an engine class")
            return {"status": "ignored", "annotation": aid}
        store.save_corrections(project, aid, updated_at, result)
        store.finish_event(project, aid, updated_at, "processed", f"{len(result)} region(s)")
        version = self.model.model_version(project)
        log.info("annotation %s of project %s: %d correction(s) scored; model version %s", aid, project, len(result), version)
        return {"status": "processed", "annotation": aid, "corrections": len(result), "model_version": version}

    def score(self, project: str, label_config: str, ann: Mapping[str, Any], task: Mapping[str, Any]) -> list[Correction]:
        """Every candidate technique's IoU with each corrected mask of the annotation."""
        if ann.get("was_cancelled"):
            return []
        schema = parse_schema(label_config)
        results = ann.get("result") or []
        brush = [r for r in results if isinstance(r, dict) and r.get("from_name") == schema.brush_from
                 and str(r.get("type", "")).lower() in ("brushlabels", "brush") and (r.get("value") or {}).get("rle")]
        if not brush:
            return []
        img = self.model.load_image(task, schema)
        h, w = img.shape[:2]
        task_id = int(task.get("id") or 0)
        predicted = {p.region_id: p for p in self.model.store.predictions_for(project, task_id)}
        rects = [ClassBox(self.model.labels.resolve(b.label), b.to_pixels(w, h).box)
                 for b in (rect_box(r, task) for r in results if isinstance(r, dict) and r.get("from_name") in schema.rect_from)]
        items = [it for it in (self._corrected_region(r, h, w, predicted, rects) for r in brush) if it is not None]
        if not items:
            return []
        seg = Segmenter(self.model.config, net=self.model.net)
        seg.set_image(img)
        corrections: list[Correction] = []
        # class prompts: the class mask covers every instance, so union the class's strokes
        class_groups: dict[str, list[int]] = {}
        for i, it in enumerate(items):
            if it.box is None:
                class_groups.setdefault(it.voc_class, []).append(i)
        for i, it in enumerate(items):
            cls, pred = it.voc_class, it.prediction
            if it.box is not None:
                prompt, corrected, kind = adapt.Prompt(cls, Box(*it.box)), it.mask, "box"
            elif class_groups.get(cls, [None])[0] == i:
                corrected = np.logical_or.reduce([items[j].mask for j in class_groups[cls]])
                prompt, kind = adapt.Prompt(cls, others=tuple(c for c in class_groups if c != cls)), "class"
            else:
                continue
            scores = adapt.score_candidates(seg, prompt, corrected, self.model.candidates(kind))
            pred_iou = None
            if pred is not None:
                pred_iou = adapt.iou(decode_brush(pred.rle, pred.height, pred.width, h, w), corrected)
            corrections.append(Correction(it.key, task_id, kind, cls, it.label, pred.technique if pred else None, pred_iou,
                                          {t.label: v for t, v in scores.items()}))
        return corrections

    def _corrected_region(self, r: Mapping[str, Any], h: int, w: int, predicted: Mapping[str, PredictedRegion],
                          rects: list[ClassBox]) -> CorrectedRegion | None:
        """A submitted brush result -> what it corrects: the prediction it replaces (same region
        id, else the most overlapped prediction of its class), and the box of a box correction."""
        v = r["value"]
        label = str((v.get("brushlabels") or [""])[0])
        cls = self.model.labels.resolve(label)
        if cls is None:
            return None
        oh, ow = int(r.get("original_height") or h), int(r.get("original_width") or w)
        mask = decode_brush(v["rle"], oh, ow, h, w)
        pred = predicted.get(str(r.get("id")))
        if pred is None:
            same = [p for p in predicted.values() if p.voc_class == cls and p.kind in ("box", "class")]
            ious = [adapt.iou(decode_brush(p.rle, p.height, p.width, h, w), mask) for p in same]
            if ious and max(ious) > 0:
                pred = same[int(np.argmax(ious))]
        box = pred.box if pred is not None and pred.kind == "box" else None
        if pred is None and rects:
            # no prediction to compare with: the annotation's own box of that class, most overlapped
            cands = [rb.box for rb in rects if rb.voc_class == cls]
            overlaps = [mask[int(b[1]):int(math.ceil(b[3])), int(b[0]):int(math.ceil(b[2]))].sum() for b in cands]
            if cands and max(overlaps) > 0:
                box = cands[int(np.argmax(overlaps))]
        return CorrectedRegion(str(pred.region_id if pred else r.get("id")), cls, label, mask, pred, box)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
