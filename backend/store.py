"""Per-project state in SQLite (``MODEL_DIR/camcut.sqlite3``): what was predicted, which
webhook events were seen, and how every candidate technique scored against each correction.

One connection per operation (safe across gunicorn workers and threads; WAL journal). Writes
run in ``BEGIN IMMEDIATE`` transactions (read-check-write is atomic across processes; a
busy database is waited for, up to ``busy_timeout``). An event whose process died between
claiming and finishing it (``pending``, owner pid gone) is claimed again on redelivery.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    project TEXT NOT NULL, task_id INTEGER NOT NULL, region_id TEXT NOT NULL,
    label TEXT NOT NULL, voc_class TEXT, kind TEXT NOT NULL, box TEXT, technique TEXT NOT NULL,
    model_version TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, rle TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (project, task_id, region_id)
);
CREATE TABLE IF NOT EXISTS events (
    project TEXT NOT NULL, annotation_id INTEGER NOT NULL, updated_at TEXT NOT NULL,
    task_id INTEGER, action TEXT NOT NULL, status TEXT NOT NULL, detail TEXT, received REAL NOT NULL,
    PRIMARY KEY (project, annotation_id, updated_at)
);
CREATE TABLE IF NOT EXISTS corrections (
    project TEXT NOT NULL, annotation_id INTEGER NOT NULL, region_key TEXT NOT NULL,
    task_id INTEGER, kind TEXT NOT NULL, voc_class TEXT NOT NULL, label TEXT NOT NULL,
    predicted_technique TEXT, predicted_iou REAL, updated_at TEXT NOT NULL,
    PRIMARY KEY (project, annotation_id, region_key)
);
CREATE TABLE IF NOT EXISTS scores (
    project TEXT NOT NULL, annotation_id INTEGER NOT NULL, region_key TEXT NOT NULL,
    kind TEXT NOT NULL, voc_class TEXT NOT NULL, technique TEXT NOT NULL, iou REAL NOT NULL,
    PRIMARY KEY (project, annotation_id, region_key, technique)
);
"""


@dataclass(frozen=True)
class PredictedRegion:
    region_id: str
    label: str
    voc_class: str | None
    kind: str  # "box" | "class" | "seeds"
    box: tuple[float, float, float, float] | None  # pixels, half-open
    technique: str
    width: int
    height: int
    rle: list[int]


@dataclass(frozen=True)
class Correction:
    region_key: str
    task_id: int
    kind: str
    voc_class: str
    label: str
    predicted_technique: str | None
    predicted_iou: float | None
    scores: dict[str, float]  # technique label -> IoU with the correction


class Store:
    def __init__(self, model_dir: Path) -> None:
        self.dir = Path(model_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "camcut.sqlite3"
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=30000")
            # Persistent: set once per database file. Switching needs an exclusive lock, and
            # SQLite does not call the busy handler for it, so two processes opening a new
            # file at once get "database is locked" at once: retry within the busy timeout.
            deadline = time.monotonic() + 30.0
            while True:
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
            db.execute("BEGIN IMMEDIATE")
            for stmt in SCHEMA.split(";"):
                if stmt.strip():
                    db.execute(stmt)
            db.execute("COMMIT")
        finally:
            db.close()

    @contextmanager
    def _db(self, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction: IMMEDIATE for writes (takes the write lock up front), deferred for reads."""
        db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=30000")
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        finally:
            db.close()

    # -- predictions --------------------------------------------------------------------------
    def save_predictions(self, project: str, task_id: int, model_version: str, regions: list[PredictedRegion], replace: bool) -> None:
        now = time.time()
        with self._db() as db:
            if replace:
                db.execute("DELETE FROM predictions WHERE project=? AND task_id=?", (project, task_id))
            db.executemany(
                "INSERT OR REPLACE INTO predictions VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (project, task_id, r.region_id, r.label, r.voc_class, r.kind, json.dumps(r.box) if r.box else None,
                     r.technique, model_version, r.width, r.height, json.dumps(r.rle), now)
                    for r in regions
                ],
            )

    def predictions_for(self, project: str, task_id: int) -> list[PredictedRegion]:
        with self._db(write=False) as db:
            rows = db.execute(
                "SELECT region_id, label, voc_class, kind, box, technique, width, height, rle FROM predictions"
                " WHERE project=? AND task_id=? ORDER BY created", (project, task_id)
            ).fetchall()
        return [
            PredictedRegion(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])) if r[4] else None, r[5], r[6], r[7], json.loads(r[8]))
            for r in rows
        ]

    # -- events (idempotency) -------------------------------------------------------------------
    def claim_event(self, project: str, annotation_id: int, updated_at: str, task_id: int | None, action: str) -> str:
        """Record an event; returns "new", "duplicate" (same id + updated_at) or "stale" (older)."""
        owner = f"pid {os.getpid()}"
        with self._db() as db:
            newest = db.execute(
                "SELECT MAX(updated_at) FROM events WHERE project=? AND annotation_id=?", (project, annotation_id)
            ).fetchone()[0]
            cur = db.execute(
                "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?,?)",
                (project, annotation_id, updated_at, task_id, action, "pending", owner, time.time()),
            )
            if cur.rowcount == 0:
                row = db.execute(
                    "SELECT status, detail FROM events WHERE project=? AND annotation_id=? AND updated_at=?",
                    (project, annotation_id, updated_at),
                ).fetchone()
                if row is None or row[0] != "pending" or _owner_alive(row[1]):
                    return "duplicate"
                # claimed by a process that died (SIGKILL, OOM) before finishing it: take it over
                db.execute(
                    "UPDATE events SET detail=?, received=? WHERE project=? AND annotation_id=? AND updated_at=?",
                    (owner, time.time(), project, annotation_id, updated_at),
                )
                return "new"
            if newest is not None and updated_at < newest:
                db.execute(
                    "UPDATE events SET status='stale' WHERE project=? AND annotation_id=? AND updated_at=?",
                    (project, annotation_id, updated_at),
                )
                return "stale"
            return "new"

    def finish_event(self, project: str, annotation_id: int, updated_at: str, status: str, detail: str | None = None) -> None:
        with self._db() as db:
            db.execute(
                "UPDATE events SET status=?, detail=? WHERE project=? AND annotation_id=? AND updated_at=?",
                (status, detail, project, annotation_id, updated_at),
            )

    def event_status(self, project: str, annotation_id: int, updated_at: str) -> str | None:
        with self._db(write=False) as db:
            row = db.execute(
                "SELECT status FROM events WHERE project=? AND annotation_id=? AND updated_at=?", (project, annotation_id, updated_at)
            ).fetchone()
        return row[0] if row else None

    # -- corrections ----------------------------------------------------------------------------
    def save_corrections(self, project: str, annotation_id: int, updated_at: str, corrections: list[Correction]) -> None:
        """Replace everything earlier versions of this annotation contributed (counted once)."""
        with self._db() as db:
            db.execute("DELETE FROM corrections WHERE project=? AND annotation_id=?", (project, annotation_id))
            db.execute("DELETE FROM scores WHERE project=? AND annotation_id=?", (project, annotation_id))
            for c in corrections:
                db.execute(
                    "INSERT INTO corrections VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (project, annotation_id, c.region_key, c.task_id, c.kind, c.voc_class, c.label,
                     c.predicted_technique, c.predicted_iou, updated_at),
                )
                db.executemany(
                    "INSERT INTO scores VALUES (?,?,?,?,?,?,?)",
                    [(project, annotation_id, c.region_key, c.kind, c.voc_class, t, float(v)) for t, v in c.scores.items()],
                )

    def delete_annotation(self, project: str, annotation_id: int) -> None:
        with self._db() as db:
            db.execute("DELETE FROM corrections WHERE project=? AND annotation_id=?", (project, annotation_id))
            db.execute("DELETE FROM scores WHERE project=? AND annotation_id=?", (project, annotation_id))

    def technique_scores(self, project: str) -> dict[tuple[str, str], dict[str, tuple[float, int]]]:
        """(kind, voc_class) -> technique -> (mean IoU, number of corrections)."""
        with self._db(write=False) as db:
            rows = db.execute(
                "SELECT kind, voc_class, technique, AVG(iou), COUNT(*) FROM scores WHERE project=?"
                " GROUP BY kind, voc_class, technique", (project,)
            ).fetchall()
        out: dict[tuple[str, str], dict[str, tuple[float, int]]] = {}
        for kind, cls, tech, mean, n in rows:
            out.setdefault((kind, cls), {})[tech] = (float(mean), int(n))
        return out

    def stats(self) -> dict[str, Any]:
        with self._db(write=False) as db:
            preds = db.execute("SELECT project, COUNT(DISTINCT task_id), COUNT(*) FROM predictions GROUP BY project").fetchall()
            events = db.execute("SELECT project, status, COUNT(*) FROM events GROUP BY project, status").fetchall()
            corr = db.execute(
                "SELECT project, kind, voc_class, COUNT(*), AVG(predicted_iou) FROM corrections GROUP BY project, kind, voc_class"
            ).fetchall()
        out: dict[str, Any] = {}
        for p, tasks, regions in preds:
            out.setdefault(p, {})["predicted"] = {"tasks": tasks, "regions": regions}
        for p, status, n in events:
            out.setdefault(p, {}).setdefault("events", {})[status] = n
        for p, kind, cls, n, mean in corr:
            out.setdefault(p, {}).setdefault("corrections", {})[f"{kind}:{cls}"] = {
                "count": n, "mean_iou_of_prediction": None if mean is None else round(mean, 4)
            }
        return out


def _owner_alive(detail: str | None) -> bool:
    """Is the process that claimed a pending event (detail "pid N") still running on this host?"""
    if not detail or not detail.startswith("pid "):
        return False
    try:
        pid = int(detail[4:])
    except ValueError:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    try:  # a killed process nobody reaped yet is a zombie: dead for our purpose
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True
