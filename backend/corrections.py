"""The correction loop: LS's annotation webhooks -> scored thresholds per project and class.

Each submitted brush mask is matched with what was predicted for the task (kept in the store),
every candidate technique of the configured variant is scored against it (``model/adapt.py``)
and the scores are stored; :meth:`backend.model.CamCutModel.adapted` picks from them.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from model import Box, Segmenter, adapt

from .database import DatabaseError, Tx
from .errors import InboxFull, TaskError
from .inbox import Apply, Inbox, Item, owner_id
from .labelstudio import LabelStudioError
from .learning import write_samples
from .prompts import Corners, int64, rect_box
from .redaction import redact
from .results import decode_brush
from .schema import parse_schema
from .store import Correction, PredictedRegion, annotation_lock, write_corrections

if TYPE_CHECKING:
    from .model import CamCutModel

log = logging.getLogger("backend.model")  # the predictor's logger: its redaction and level apply

# LS 1.23 sends ANNOTATION_CREATED / ANNOTATION_UPDATED (one annotation), ANNOTATIONS_CREATED
# (a list, "predictions to annotations") and ANNOTATIONS_DELETED (ids); ANNOTATION_DELETED is
# label-studio-ml's name.
DELETE_EVENTS = ("ANNOTATION_DELETED", "ANNOTATIONS_DELETED")
TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", *DELETE_EVENTS, "START_TRAINING")
POLL_SECONDS = 5.0  # the worker's wait when idle: how soon a dead sibling's claim is taken over
POISON_ATTEMPTS = 5  # an event whose writes failed this often while the database answers is an error


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


def merge_strokes(items: list[CorrectedRegion]) -> list[CorrectedRegion]:
    """One corrected region per key: brush results that correct the same prediction (an object
    painted in two strokes, or a stroke added beside the edited prediction) are one corrected
    mask, their union. Two corrections with one key broke the store's primary key, and the event
    was given back and retried forever."""
    out: dict[str, CorrectedRegion] = {}
    for it in items:
        first = out.get(it.key)
        out[it.key] = it if first is None else dataclasses.replace(first, mask=first.mask | it.mask)
    return list(out.values())


@dataclass(frozen=True)
class Outcome:
    """What processing one event decided; ``apply`` writes it inside the inbox's transaction."""

    status: str  # processed | ignored | unchanged | deleted | error
    detail: str
    apply: Apply | None = None
    drop: bool = False
    project: str = ""
    count: int = 0


def _ledger(
    project: str,
    aid: int,
    updated_at: str,
    task_id: int,
    action: str,
    status: str,
    detail: str,
    corrections: list[Correction] | None,
    samples: list | None = None,
) -> Apply:
    """Record this version of the annotation; unless it errored, its corrections replace the
    earlier ones (none: the annotation no longer has a usable mask). A newer version already
    learned (two workers on the same annotation) wins."""

    def apply(db: Tx) -> None:
        db.lock(annotation_lock(project, aid))  # PostgreSQL: the check below and the writes, atomic
        newest = db.execute(
            "SELECT MAX(updated_at) FROM events WHERE project=? AND annotation_id=? AND status != 'error'", (project, aid)
        ).fetchone()[0]
        if newest is not None and newest > updated_at:
            return
        db.execute(
            "INSERT INTO events VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (project, annotation_id, updated_at) DO UPDATE SET"
            " task_id=excluded.task_id, action=excluded.action, status=excluded.status, detail=excluded.detail,"
            " received=excluded.received",
            (project, aid, updated_at, task_id, action, status, detail, time.time()),
        )
        if status != "error":
            write_corrections(db, project, aid, updated_at, corrections)
            write_samples(db, project, aid, updated_at, samples)  # the learned head's (backend/learning.py)

    return apply


def _withdraw(project: str, aid: int, action: str) -> Apply:
    def apply(db: Tx) -> None:
        write_corrections(db, project, aid, "", None)  # (takes the annotation's lock)
        write_samples(db, project, aid, "", None)
        db.execute("DELETE FROM events WHERE project=? AND annotation_id=?", (project, aid))

    return apply


class CorrectionLoop:
    """``fit`` for one model. A webhook is only a notification: its body names a project, an
    action and annotation ids, nothing else of it is used. Each event is persisted in the inbox
    (``backend/inbox.py``) before ``/webhook`` answers; processing reads the annotation, its task
    and the project's labelling config back from Label Studio's API with the key and makes the
    stored corrections match what LS holds: learned (LS's ``updated_at`` decides what is new),
    or withdrawn when LS answers 404 for the annotation. A forged body can at most cause such
    a re-read. Without ``LABEL_STUDIO_URL`` and ``LABEL_STUDIO_API_KEY`` nothing is learned:
    events are kept until the backend runs with them.

    Processing runs in one background thread per process (``start()``, called by the app: the events left
    pending by a previous run are processed at start-up), or inside the request with
    ``CAMCUT_WEBHOOK_SYNC`` (tests)."""

    def __init__(self, model: CamCutModel) -> None:
        self.model = model
        settings = model.settings
        self.inbox = Inbox(model.store, settings.max_pending_events)
        self.owner = owner_id()
        self.learning = "on"
        if not settings.label_studio_url or not settings.label_studio_api_key:
            self.learning = (
                "off: LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are needed to read annotations back from "
                "Label Studio (webhook bodies are not trusted); events are kept until then"
            )
            log.warning("correction loop %s", self.learning)
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self._local = threading.local()  # score()'s head samples, for the ledger of the same event

    def start(self) -> None:
        """Begin processing (the web app calls this; the bulk runner's models do not): the
        events left waiting by an earlier run first."""
        if self.learning != "on" or self._thread is not None:
            return
        if self.model.settings.webhook_sync:
            self.drain()
        else:
            self._thread = threading.Thread(target=self._loop, name="camcut-adapt", daemon=True)
            self._thread.start()

    # -- receiving ----------------------------------------------------------------------------------
    def fit(self, event: str, data: Mapping[str, Any]) -> dict[str, Any]:
        if event == "START_TRAINING":
            return {"status": "ok", "detail": "camcut adapts thresholds from each submitted annotation; nothing to train"}
        project_obj = data.get("project") or {}
        pid = int64(project_obj.get("id")) if isinstance(project_obj, dict) else None
        if event in DELETE_EVENTS:
            anns = data.get("annotations") or ([data["annotation"]] if isinstance(data.get("annotation"), dict) else [])
            if not isinstance(anns, list):
                raise TaskError(f"{event} payload: 'annotations' must be a list")
        else:
            ann = data.get("annotation")
            anns = ann if isinstance(ann, list) else [ann]
        ids = [int64(a.get("id")) if isinstance(a, dict) else None for a in anns]
        if event in DELETE_EVENTS:  # LS never had an annotation with such an id: nothing to withdraw
            ids = [i for i in ids if i is not None]
        if pid is None or any(i is None for i in ids):
            raise TaskError(f"{event} payload needs project.id and annotation.id (integers)")
        keys = [(i, event) for i in dict.fromkeys(ids) if i is not None]
        project = str(pid)
        if not self.inbox.put(project, keys):
            raise InboxFull(f"{self.inbox.max_pending} webhook events are waiting to be processed: retry later")
        if self.learning != "on":
            return {"status": "queued", "annotations": [k[0] for k in keys], "learning": self.learning}
        if not self.model.settings.webhook_sync:
            self._wake.set()
            return {"status": "queued", "annotations": [k[0] for k in keys]}
        results = []
        for aid, action in keys:
            item = self.inbox.claim(self.owner, only=(project, aid, action))
            results.append(self.run(item) if item else {"status": "queued", "annotation": aid})
        self.drain()
        if len(results) == 1:
            return results[0]
        return {"status": "processed", "annotations": results}

    # -- processing ---------------------------------------------------------------------------------
    def drain(self) -> int:
        """Process every waiting event that this process can claim; returns how many ran."""
        n = 0
        while (item := self.inbox.claim(self.owner)) is not None:
            if self.run(item)["status"] == "retry":
                break  # LS unavailable: the rest waits too
            n += 1
        return n

    def _loop(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            self._wake.clear()
            try:
                item = self.inbox.claim(self.owner)
            except DatabaseError as exc:
                log.warning("webhook inbox: %s", exc)
                item = None
            if item is None:
                self._wake.wait(POLL_SECONDS)  # a new event, or a poll for claims orphaned by dead siblings
                continue
            try:
                status = self.run(item)["status"]
            except DatabaseError as exc:  # the database went away mid-event (PostgreSQL restarted)
                log.warning("webhook inbox: %s; annotation %s given back", exc, item.annotation_id)
                self._give_back(item, str(exc))
                status = "retry"
            if status == "retry":
                backoff = min(60.0, max(1.0, backoff * 2))
                self._stop.wait(backoff)
            else:
                backoff = 0.0

    def _give_back(self, item: Item, detail: str) -> None:
        """Release a claim whose finish failed: this process lives on, so no other would take
        the row over (nothing was written: the finish was one transaction)."""
        wait = 1.0
        while not self._stop.is_set():
            try:
                self.inbox.release(item, self.owner, detail)
                return
            except DatabaseError:
                self._stop.wait(wait)
                wait = min(30.0, wait * 2)

    def run(self, item: Item) -> dict[str, Any]:
        """Process one claimed event; never raises (a background job)."""
        aid = item.annotation_id
        try:
            outcome = self.reconcile(item)
        except LabelStudioError as exc:
            msg = redact(str(exc), self.model.secrets)
            if exc.status is None or exc.fatal or exc.status >= 500 or exc.status == 429:
                log.warning("annotation %s: Label Studio unavailable, kept for later: %s", aid, msg)
                self.inbox.release(item, self.owner, msg)
                return {"status": "retry", "annotation": aid, "error": msg}
            outcome = Outcome("error", msg)
        except Exception as exc:  # background job: record, never raise into the loop
            outcome = Outcome("error", redact(f"{type(exc).__name__}: {exc}", self.model.secrets))
        if outcome.status == "error":
            log.warning("annotation %s of project %s: correction not used: %s", aid, item.project, outcome.detail)
        try:
            finished = self.inbox.finish(item, self.owner, outcome.status, outcome.detail, outcome.apply, outcome.drop)
        except DatabaseError as exc:
            if outcome.apply is None or item.attempts + 1 < POISON_ATTEMPTS:
                raise  # the database went away (or a transient conflict): the event is given back
            # The same writes failed POISON_ATTEMPTS times; if the event's error can be recorded now,
            # the database answers and it is these writes that fail: recorded, not retried for ever
            # (each retry re-reads LS and re-runs the CNN and the cuts).
            outcome = Outcome("error", redact(f"not stored after {item.attempts + 1} attempts: {exc}", self.model.secrets))
            log.warning("annotation %s of project %s: correction not used: %s", aid, item.project, outcome.detail)
            finished = self.inbox.finish(item, self.owner, outcome.status, outcome.detail, None, False)
        if not finished:
            return {"status": "queued", "annotation": aid}  # another process took the claim over
        res: dict[str, Any] = {"status": outcome.status, "annotation": aid}
        if outcome.status == "error":
            res["error"] = outcome.detail
        if outcome.status in ("processed", "deleted"):
            self.model.learner.schedule(outcome.project)  # a background re-fit once enough are new
            if self.model.settings.webhook_sync:
                self.model.learner.drain()
        if outcome.status == "processed":
            res["corrections"] = outcome.count
            res["model_version"] = version = self.model.model_version(outcome.project)
            log.info(
                "annotation %s of project %s: %d correction(s) scored; model version %s",
                aid,
                outcome.project,
                outcome.count,
                version,
            )
        return res

    def reconcile(self, item: Item) -> Outcome:
        """Read the annotation from LS and decide what the store must hold for it."""
        client = self.model.fetcher.client
        aid = item.annotation_id
        try:
            ann = client.get_json(f"/api/annotations/{aid}/")
        except LabelStudioError as exc:
            if exc.status != 404:
                raise
            # gone from LS: withdraw it (annotation ids are unique across LS's projects)
            had = self.model.store.learned_version(item.project, aid) is not None
            return Outcome(
                "deleted",
                "Label Studio has no such annotation",
                _withdraw(item.project, aid, item.action),
                drop=not had,
                project=item.project,
            )
        if not isinstance(ann, dict) or int64(ann.get("id")) != aid:
            return Outcome("error", "Label Studio's answer for the annotation is not that annotation")
        task_id = int64(ann.get("task"))
        if task_id is None:
            return Outcome("error", "the annotation Label Studio returned has no task")
        task = client.get_json(f"/api/tasks/{task_id}/")
        project = int64(ann.get("project") or (task or {}).get("project"))
        if project is None or not isinstance(task, dict):
            return Outcome("error", "Label Studio returned no project / task for the annotation")
        pkey = str(project)
        updated_at = str(ann.get("updated_at") or ann.get("created_at") or "")
        learned = self.model.store.learned_version(pkey, aid)
        if learned is not None and learned[1] != "error" and learned[0] >= updated_at:
            return Outcome("unchanged", f"version {updated_at} already learned", project=pkey)
        label_config = (client.project(project) or {}).get("label_config") or ""
        self._local.samples = []
        try:
            result = self.score(pkey, label_config, ann, task)
        except LabelStudioError:
            raise
        except Exception as exc:
            msg = redact(f"{type(exc).__name__}: {exc}", self.model.secrets)
            return Outcome("error", msg, _ledger(pkey, aid, updated_at, task_id, item.action, "error", msg, None), project=pkey)
        status, detail = ("processed", f"{len(result)} region(s)") if result else ("ignored", "no brush mask of an engine class")
        return Outcome(
            status,
            detail,
            _ledger(pkey, aid, updated_at, task_id, item.action, status, detail, result, self._local.samples),
            project=pkey,
            count=len(result),
        )

    def score(self, project: str, label_config: str, ann: Mapping[str, Any], task: Mapping[str, Any]) -> list[Correction]:
        """Every candidate technique's IoU with each corrected mask of the annotation."""
        if ann.get("was_cancelled"):
            return []
        schema = parse_schema(label_config)
        results = ann.get("result") or []
        brush = [
            r
            for r in results
            if isinstance(r, dict)
            and r.get("from_name") == schema.brush_from
            and str(r.get("type", "")).lower() in ("brushlabels", "brush")
            and (r.get("value") or {}).get("rle")
        ]
        if not brush:
            return []
        img = self.model.load_image(task, schema)
        h, w = img.shape[:2]
        task_id = int(task.get("id") or 0)
        predicted = {p.region_id: p for p in self.model.store.predictions_for(project, task_id)}
        rects = [
            ClassBox(self.model.labels.resolve(b.label), b.to_pixels(w, h).box)
            for b in (rect_box(r, task) for r in results if isinstance(r, dict) and r.get("from_name") in schema.rect_from)
        ]
        items = merge_strokes([it for it in (self._corrected_region(r, h, w, predicted, rects) for r in brush) if it is not None])
        if not items:
            return []
        # the served answer is re-made as it was served (tags on a large image at the working size)
        seg = Segmenter(self.model.config, net=self.model.net, tag_work_pixels=self.model.settings.tag_work_pixels)
        seg.heads = self.model.learner.recorder()  # box answers also teach the learned head
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
            sample = self.model.learner.sample(seg, prompt.box, cls, corrected) if kind == "box" and prompt.box else None
            if sample is not None:
                self._local.samples.append((it.key, sample))
            pred_iou = None
            if pred is not None:
                pred_iou = adapt.iou(decode_brush(pred.rle, pred.height, pred.width, h, w), corrected)
            corrections.append(
                Correction(
                    it.key,
                    task_id,
                    kind,
                    cls,
                    it.label,
                    pred.technique if pred else None,
                    pred_iou,
                    {t.label: v for t, v in scores.items()},
                )
            )
        return corrections

    def _corrected_region(
        self, r: Mapping[str, Any], h: int, w: int, predicted: Mapping[str, PredictedRegion], rects: list[ClassBox]
    ) -> CorrectedRegion | None:
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
            overlaps = [mask[int(b[1]) : int(math.ceil(b[3])), int(b[0]) : int(math.ceil(b[2]))].sum() for b in cands]
            if cands and max(overlaps) > 0:
                box = cands[int(np.argmax(overlaps))]
        return CorrectedRegion(str(pred.region_id if pred else r.get("id")), cls, label, mask, pred, box)

    def close(self) -> None:
        """Stop the background thread after the event it is processing (if any)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
