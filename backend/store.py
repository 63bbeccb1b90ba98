"""Per-project state in SQLite (``MODEL_DIR/camcut.sqlite3``): what was predicted, which
annotation versions were learned (``events``), and how every candidate technique scored
against each correction. The webhook inbox (received, not yet processed events) is
``backend/inbox.py`` on the same database.

One connection per operation (safe across gunicorn workers and threads; WAL journal). Writes
run in ``BEGIN IMMEDIATE`` transactions (read-check-write is atomic across processes; a
busy database is waited for, up to ``busy_timeout``).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    project TEXT NOT NULL, task_id INTEGER NOT NULL, region_id TEXT NOT NULL,
    label TEXT NOT NULL, voc_class TEXT, kind TEXT NOT NULL, box TEXT, technique TEXT NOT NULL,
    model_version TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, rle TEXT NOT NULL,
    created REAL NOT NULL, interactive INTEGER NOT NULL DEFAULT 0,
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
CREATE TABLE IF NOT EXISTS inbox (
    project TEXT NOT NULL, annotation_id INTEGER NOT NULL, action TEXT NOT NULL,
    state TEXT NOT NULL, owner TEXT, again INTEGER NOT NULL DEFAULT 0, deliveries INTEGER NOT NULL,
    runs INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, outcome TEXT, detail TEXT,
    received REAL NOT NULL, finished REAL,
    PRIMARY KEY (project, annotation_id, action)
);
CREATE INDEX IF NOT EXISTS inbox_state ON inbox (state, received);
CREATE TABLE IF NOT EXISTS scores (
    project TEXT NOT NULL, annotation_id INTEGER NOT NULL, region_key TEXT NOT NULL,
    kind TEXT NOT NULL, voc_class TEXT NOT NULL, technique TEXT NOT NULL, iou REAL NOT NULL,
    PRIMARY KEY (project, annotation_id, region_key, technique)
);
CREATE TABLE IF NOT EXISTS head_samples (
    project TEXT NOT NULL, annotation_id INTEGER NOT NULL, region_key TEXT NOT NULL,
    voc_class TEXT NOT NULL, agreement REAL NOT NULL, core_iou REAL NOT NULL, arrays BLOB NOT NULL,
    updated_at TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (project, annotation_id, region_key)
);
CREATE TABLE IF NOT EXISTS heads (
    project TEXT NOT NULL, voc_class TEXT NOT NULL, version TEXT NOT NULL, arrays BLOB NOT NULL,
    PRIMARY KEY (project, voc_class)
);
CREATE TABLE IF NOT EXISTS head_fits (
    project TEXT PRIMARY KEY, version TEXT NOT NULL, samples INTEGER NOT NULL, fitted REAL NOT NULL,
    accepted INTEGER NOT NULL, detail TEXT
);
"""


# Interactive prediction rows kept per task: the regions an annotator may still submit (each
# prompt adds one; a task rarely has more objects than this), older prompts are dropped.
INTERACTIVE_KEPT = 16


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
            # databases made before interactive rows were bounded lack the column
            if "interactive" not in {r[1] for r in db.execute("PRAGMA table_info(predictions)")}:
                db.execute("ALTER TABLE predictions ADD COLUMN interactive INTEGER NOT NULL DEFAULT 0")
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

    def transaction(self, write: bool = True) -> Any:
        """One transaction on the database, for the modules that share it (``backend/inbox.py``)."""
        return self._db(write)

    # -- predictions --------------------------------------------------------------------------
    def save_predictions(
        self, project: str, task_id: int, model_version: str, regions: list[PredictedRegion], replace: bool
    ) -> None:
        """``replace``: a batch prediction, which replaces every row of the task. Otherwise an
        interactive one: added, and only the task's newest :data:`INTERACTIVE_KEPT` interactive
        rows are kept (one prompt per click: 200 prompts on one task stored 200 rows)."""
        now = time.time()
        with self._db() as db:
            if replace:
                db.execute("DELETE FROM predictions WHERE project=? AND task_id=?", (project, task_id))
            db.executemany(
                "INSERT OR REPLACE INTO predictions (project, task_id, region_id, label, voc_class, kind, box, technique,"
                " model_version, width, height, rle, created, interactive) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        project,
                        task_id,
                        r.region_id,
                        r.label,
                        r.voc_class,
                        r.kind,
                        json.dumps(r.box) if r.box else None,
                        r.technique,
                        model_version,
                        r.width,
                        r.height,
                        json.dumps(r.rle),
                        now,
                        0 if replace else 1,
                    )
                    for r in regions
                ],
            )
            if not replace:
                db.execute(
                    "DELETE FROM predictions WHERE project=? AND task_id=? AND interactive=1 AND rowid NOT IN"
                    " (SELECT rowid FROM predictions WHERE project=? AND task_id=? AND interactive=1"
                    "  ORDER BY created DESC, rowid DESC LIMIT ?)",
                    (project, task_id, project, task_id, INTERACTIVE_KEPT),
                )

    def predictions_for(self, project: str, task_id: int) -> list[PredictedRegion]:
        with self._db(write=False) as db:
            rows = db.execute(
                "SELECT region_id, label, voc_class, kind, box, technique, width, height, rle FROM predictions"
                " WHERE project=? AND task_id=? ORDER BY created",
                (project, task_id),
            ).fetchall()
        return [
            PredictedRegion(r[0], r[1], r[2], r[3], tuple(json.loads(r[4])) if r[4] else None, r[5], r[6], r[7], json.loads(r[8]))
            for r in rows
        ]

    # -- events: the annotation versions learned (updated_at as Label Studio records it) -------
    def learned_version(self, project: str, annotation_id: int) -> tuple[str, str] | None:
        """(updated_at, status) of the newest version of the annotation that was processed."""
        with self._db(write=False) as db:
            row = db.execute(
                "SELECT updated_at, status FROM events WHERE project=? AND annotation_id=? ORDER BY updated_at DESC LIMIT 1",
                (project, annotation_id),
            ).fetchone()
        return (row[0], row[1]) if row else None

    # -- corrections ----------------------------------------------------------------------------
    def save_corrections(self, project: str, annotation_id: int, updated_at: str, corrections: list[Correction]) -> None:
        """Replace everything earlier versions of this annotation contributed (counted once)."""
        with self._db() as db:
            write_corrections(db, project, annotation_id, updated_at, corrections)

    def delete_annotation(self, project: str, annotation_id: int) -> None:
        with self._db() as db:
            write_corrections(db, project, annotation_id, "", None)

    def technique_scores(self, project: str) -> dict[tuple[str, str], dict[str, tuple[float, int]]]:
        """(kind, voc_class) -> technique -> (mean IoU, number of corrections)."""
        with self._db(write=False) as db:
            rows = db.execute(
                "SELECT kind, voc_class, technique, AVG(iou), COUNT(*) FROM scores WHERE project=?"
                " GROUP BY kind, voc_class, technique",
                (project,),
            ).fetchall()
        out: dict[tuple[str, str], dict[str, tuple[float, int]]] = {}
        for kind, cls, tech, mean, n in rows:
            out.setdefault((kind, cls), {})[tech] = (float(mean), int(n))
        return out

    def stats(self) -> dict[str, Any]:
        with self._db(write=False) as db:
            preds = db.execute("SELECT project, COUNT(DISTINCT task_id), COUNT(*) FROM predictions GROUP BY project").fetchall()
            events = db.execute("SELECT project, status, COUNT(*) FROM events GROUP BY project, status").fetchall()
            inbox = db.execute("SELECT project, state, COUNT(*) FROM inbox GROUP BY project, state").fetchall()
            corr = db.execute(
                "SELECT project, kind, voc_class, COUNT(*), AVG(predicted_iou) FROM corrections GROUP BY project, kind, voc_class"
            ).fetchall()
        out: dict[str, Any] = {}
        for p, tasks, regions in preds:
            out.setdefault(p, {})["predicted"] = {"tasks": tasks, "regions": regions}
        for p, status, n in events:
            out.setdefault(p, {}).setdefault("events", {})[status] = n
        for p, state, n in inbox:
            out.setdefault(p, {}).setdefault("webhooks", {})[state] = n
        for p, kind, cls, n, mean in corr:
            out.setdefault(p, {}).setdefault("corrections", {})[f"{kind}:{cls}"] = {
                "count": n,
                "mean_iou_of_prediction": None if mean is None else round(mean, 4),
            }
        return out


def write_corrections(
    db: sqlite3.Connection, project: str, annotation_id: int, updated_at: str, corrections: list[Correction] | None
) -> None:
    """Inside a transaction: what the annotation contributes becomes ``corrections`` (None or
    []: nothing; it was deleted, cancelled or has no usable mask)."""
    db.execute("DELETE FROM corrections WHERE project=? AND annotation_id=?", (project, annotation_id))
    db.execute("DELETE FROM scores WHERE project=? AND annotation_id=?", (project, annotation_id))
    for c in corrections or []:
        db.execute(
            "INSERT INTO corrections VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                project,
                annotation_id,
                c.region_key,
                c.task_id,
                c.kind,
                c.voc_class,
                c.label,
                c.predicted_technique,
                c.predicted_iou,
                updated_at,
            ),
        )
        db.executemany(
            "INSERT INTO scores VALUES (?,?,?,?,?,?,?)",
            [(project, annotation_id, c.region_key, c.kind, c.voc_class, t, float(v)) for t, v in c.scores.items()],
        )
