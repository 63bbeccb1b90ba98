"""The learned head's side of the correction loop: samples and heads in the store, re-fits in
the background (the pixel work and the fit itself are model/head.py's).

* **Collect.** For every box correction the webhook path trusts (``backend/corrections.py``
  re-reads the annotation from Label Studio), the engine's training-free answer is re-made and
  its window's grid pixels are kept with the corrected mask there (``model.head.
  correction_sample``): ~100 kB of float16 per object, at most ``MAX_SAMPLES`` objects per
  project (the most recent), in ``head_samples``, written in the same transaction as the
  annotation's other corrections (an updated annotation replaces its samples, a deleted one
  withdraws them).
* **Re-fit.** One background thread per process, woken when a project has ``REFIT_EVERY`` new
  corrections (or at start-up for projects left with unfitted ones): ``model.head.fit_heads``
  within ``FIT_BUDGET_S`` CPU seconds; the new head set replaces the old one only if it beats it
  on the project's most recent corrections held out from its fit (or, when no head wins, a score
  model alone that ranks the corrections better: version "s...", the masks stay the
  training-free ones). Predictions never wait for it:
  they read the heads in the store (cached per version).
* **Serve.** ``heads(project)`` is the project's head set, or None: a project without an
  accepted head gets exactly the training-free model, and the same model version.

Arrays are stored as ``np.savez`` bytes with ``allow_pickle=False`` both ways: nothing stored is
ever unpickled.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from model.head import MIN_OBJECTS, FitReport, Head, HeadSet, ObjectSample, correction_sample, fit_heads

if TYPE_CHECKING:
    from model import Box, Segmenter

    from .database import Tx
    from .store import Store

log = logging.getLogger("backend.model")

MAX_SAMPLES = 400  # corrected objects kept per project (~40 MB); the oldest go first
REFIT_EVERY = 10  # new corrections of a project before its head is re-fitted
FIT_BUDGET_S = 25.0  # CPU seconds of one re-fit (the bound: 30 s for 200 corrections)


def to_blob(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    return buf.getvalue()


def from_blob(blob: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def write_samples(
    db: Tx, project: str, annotation_id: int, updated_at: str, samples: list[tuple[str, ObjectSample]] | None
) -> None:
    """Inside a transaction: the annotation's head samples become ``samples`` (None: none)."""
    db.execute("DELETE FROM head_samples WHERE project=? AND annotation_id=?", (project, annotation_id))
    now = time.time()
    for key, s in samples or []:
        db.execute(
            "INSERT INTO head_samples VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (project, annotation_id, region_key) DO UPDATE SET "
            "voc_class=excluded.voc_class, agreement=excluded.agreement, core_iou=excluded.core_iou, "
            "arrays=excluded.arrays, updated_at=excluded.updated_at, created=excluded.created",
            (project, annotation_id, key, s.voc_class, s.agreement, s.core_iou, to_blob(_arrays(s)), updated_at, now),
        )
    # Bounded per project: keep the MAX_SAMPLES most recent objects.
    row = db.execute(
        "SELECT created FROM head_samples WHERE project=? ORDER BY created DESC LIMIT 1 OFFSET ?", (project, MAX_SAMPLES - 1)
    ).fetchone()
    if row is not None:
        db.execute("DELETE FROM head_samples WHERE project=? AND created < ?", (project, row[0]))


def _arrays(s: ObjectSample) -> dict[str, np.ndarray]:
    a = {"x": s.x, "y": s.y}
    if s.uv is not None and s.shape is not None:  # the shape prior's (model/shapeprior.py)
        a["uv"], a["shape"] = s.uv, s.shape
    if s.ring is not None:  # the answer with the core's ring prior (model/head.py ring_head)
        a["ring"] = s.ring
    return a


def load_samples(store: Store, project: str) -> list[ObjectSample]:
    """The project's samples, oldest first (the fit's hold-out is the most recent)."""
    return _load_samples(store, project)[0]


def _load_samples(store: Store, project: str) -> tuple[list[ObjectSample], float]:
    """The samples and the newest one's ``created`` (what a fit on them has seen)."""
    with store.transaction(write=False) as db:
        rows = db.execute(
            "SELECT voc_class, agreement, core_iou, arrays, created, annotation_id FROM head_samples WHERE project=? "
            "ORDER BY created, annotation_id, region_key",
            (project,),
        ).fetchall()
    out = []
    for cls, agreement, core_iou, blob, _, annotation in rows:
        a = from_blob(blob)
        # Samples stored before the shape prior have no uv / shape: they teach the MLP only.
        uv = a["uv"].astype(np.float16) if "uv" in a else None
        shape = a["shape"].astype(np.float16) if "shape" in a else None
        ring = a["ring"].astype(bool) if "ring" in a else None  # stored before the ring prior: none
        out.append(ObjectSample(str(cls), a["x"].astype(np.float16), a["y"].astype(bool), float(agreement),
                                float(core_iou), uv, shape, f"a{annotation}", ring))  # fmt: skip
    return out, max((float(r[4]) for r in rows), default=0.0)


class Learner:
    """Per-project learned heads for one CamCutModel (its store and engine configuration)."""

    def __init__(self, store: Store, enabled: bool, min_objects: int = MIN_OBJECTS) -> None:
        self.store = store
        self.min_objects = min_objects  # corrected objects before a head may be kept (CAMCUT_HEAD_MIN_CORRECTIONS)
        # The head refines the featcut core's box answer: other cuts have nothing to learn here.
        self.enabled = enabled
        self._cache: dict[str, tuple[str, HeadSet | None]] = {}
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: threading.Thread | None = None
        self.last: dict[str, FitReport] = {}

    # -- collecting ---------------------------------------------------------------------------
    def recorder(self) -> HeadSet | None:
        """The Segmenter ``heads`` that records answers (set before ``set_image``), or None."""
        return HeadSet() if self.enabled else None

    def sample(self, seg: Segmenter, box: Box, voc_class: str, mask: np.ndarray) -> ObjectSample | None:
        return correction_sample(seg, box, voc_class, mask) if self.enabled else None

    # -- serving ------------------------------------------------------------------------------
    def version(self, project: str) -> str:
        """The accepted head set's version ('' without one)."""
        if not self.enabled:
            return ""
        with self.store.transaction(write=False) as db:
            row = db.execute("SELECT version FROM heads WHERE project=? LIMIT 1", (project,)).fetchone()
        return str(row[0]) if row else ""

    def heads(self, project: str) -> HeadSet | None:
        """The project's accepted head set (None: the training-free model)."""
        version = self.version(project)
        if not version:
            return None
        hit = self._cache.get(project)
        if hit is not None and hit[0] == version:
            return hit[1]
        with self.store.transaction(write=False) as db:
            rows = db.execute("SELECT voc_class, arrays, version FROM heads WHERE project=?", (project,)).fetchall()
        heads = {str(c): Head.from_arrays(from_blob(b)) for c, b, v in rows if v == version}
        hs = HeadSet(heads, version) if heads else None
        self._cache[project] = (version, hs)
        return hs

    # -- fitting ------------------------------------------------------------------------------
    def refit(self, project: str) -> FitReport | None:
        """Fit the project's heads on its samples now; store them if they win the gate."""
        samples, seen = _load_samples(self.store, project)
        if not samples:
            return None
        current = self.heads(project)
        rep = fit_heads(samples, current.heads if current else None, budget_s=FIT_BUDGET_S, min_objects=self.min_objects)
        old = current.version if current else ""
        version = old
        if rep.accepted:
            digest = hashlib.sha256()
            blobs = {c: to_blob(h.to_arrays()) for c, h in sorted(rep.heads.items())}
            for c, b in blobs.items():
                digest.update(c.encode() + b)
            # "s": a score model alone (the masks are the training-free ones), "h": a head that changes masks
            version = ("s" if rep.kind == "score" else "h") + digest.hexdigest()[:10]
        with self.store.transaction() as db:
            db.lock(f"heads:{project}")  # the check and the replace below are one step across replicas
            now_v = db.execute("SELECT version FROM heads WHERE project=? LIMIT 1", (project,)).fetchone()
            if rep.accepted and (now_v[0] if now_v else "") == old:  # a sibling process did not replace it meanwhile
                db.execute("DELETE FROM heads WHERE project=?", (project,))
                for c, b in blobs.items():
                    db.execute("INSERT INTO heads VALUES (?,?,?,?)", (project, c, version, b))
            detail = f"{rep.kind} held-out IoU {rep.new_iou:.4f} vs {rep.old_iou:.4f} on {rep.holdout}, {rep.seconds:.1f} s CPU"
            if rep.rho is not None:
                detail += f"; score rho {rep.rho[0]:.3f} vs the training-free score's {rep.rho[1]:.3f} (cross-validated)"
            db.execute(
                "INSERT INTO head_fits VALUES (?,?,?,?,?,?) ON CONFLICT (project) DO UPDATE SET version=excluded.version, "
                "samples=excluded.samples, fitted=excluded.fitted, accepted=excluded.accepted, detail=excluded.detail",
                # fitted = the newest sample the fit saw, not the time it ended: corrections stored
                # while it ran are new to the next fit (they used to count as fitted, so a project
                # could be left with >= REFIT_EVERY unfitted corrections and no re-fit due)
                (project, version, len(samples), seen, int(rep.accepted), detail),
            )
        self.last[project] = rep
        log.info(
            "project %s: head re-fit on %d corrections, %s: %s",
            project,
            len(samples),
            "kept" if rep.accepted else "not kept",
            detail,
        )
        return rep

    def due(self) -> list[str]:
        """Projects with at least REFIT_EVERY corrections stored since their last fit (a count, not
        a difference of totals: the total stops at MAX_SAMPLES)."""
        with self.store.transaction(write=False) as db:
            rows = db.execute(
                "SELECT s.project, SUM(CASE WHEN f.fitted IS NULL OR s.created > f.fitted THEN 1 ELSE 0 END) "
                "FROM head_samples s LEFT JOIN head_fits f ON f.project = s.project GROUP BY s.project"
            ).fetchall()
        return [str(p) for p, new in rows if (new or 0) >= REFIT_EVERY]

    def schedule(self, project: str) -> None:
        """Re-fit ``project`` in the background if it is due (never waits for the fit)."""
        if not self.enabled or project not in self.due():
            return
        with self._lock:
            self._pending.add(project)
        self._wake.set()

    def start(self) -> None:
        """The background re-fitter; projects left due by an earlier run are fitted first."""
        if not self.enabled or self._thread is not None:
            return
        with self._lock:
            self._pending.update(self.due())
        self._thread = threading.Thread(target=self._loop, name="camcut-head", daemon=True)
        self._thread.start()
        self._wake.set()

    def drain(self) -> int:
        """Fit every pending project now, in this thread (tests; CAMCUT_WEBHOOK_SYNC)."""
        n = 0
        while True:
            with self._lock:
                if not self._pending:
                    return n
                project = self._pending.pop()
            self._fit_logged(project)
            n += 1

    def _fit_logged(self, project: str) -> None:
        try:
            self.refit(project)
        except Exception as exc:  # a background job: logged, never raised into the loop
            log.warning("project %s: head re-fit failed: %s: %s", project, type(exc).__name__, exc)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(60.0)
            self._wake.clear()
            self.drain()

    def status(self, project: str) -> dict[str, Any]:
        with self.store.transaction(write=False) as db:
            n = db.execute("SELECT COUNT(*) FROM head_samples WHERE project=?", (project,)).fetchone()[0]
            fit = db.execute("SELECT version, samples, accepted, detail FROM head_fits WHERE project=?", (project,)).fetchone()
        return {"samples": int(n), "version": self.version(project), "last_fit": list(fit) if fit else None}

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)


__all__ = ["FIT_BUDGET_S", "Learner", "MAX_SAMPLES", "REFIT_EVERY", "from_blob", "load_samples", "to_blob", "write_samples"]
