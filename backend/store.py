"""Per-project state: what was predicted, which annotation versions were learned (``events``),
and how every candidate technique scored against each correction. The webhook inbox (received,
not yet processed events) is ``backend/inbox.py`` on the same database.

The database is SQLite at ``MODEL_DIR/camcut.sqlite3`` (the default; one connection per
operation, WAL journal, writes in ``BEGIN IMMEDIATE``) or, with ``CAMCUT_DATABASE_URL``, one
PostgreSQL database that replicas share (``backend/database.py``: the seam, its locking rules;
``backend/migrations.py``: the schema).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .database import Database, Tx
from .migrations import MIGRATIONS, adopt_unversioned

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
    def __init__(self, model_dir: Path, database_url: str = "") -> None:
        self.dir = Path(model_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "camcut.sqlite3"  # used only without a database URL
        self.db = Database(database_url, self.path)
        self.schema_version = self.db.migrate(MIGRATIONS, adopt_unversioned)

    @contextmanager
    def _db(self, write: bool = True) -> Iterator[Tx]:
        with self.db.transaction(write) as tx:
            yield tx

    def transaction(self, write: bool = True) -> Any:
        """One transaction on the database, for the modules that share it (``backend/inbox.py``)."""
        return self.db.transaction(write)

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
                "INSERT INTO predictions (project, task_id, region_id, label, voc_class, kind, box, technique,"
                " model_version, width, height, rle, created, interactive) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (project, task_id, region_id) DO UPDATE SET label=excluded.label,"
                " voc_class=excluded.voc_class, kind=excluded.kind, box=excluded.box, technique=excluded.technique,"
                " model_version=excluded.model_version, width=excluded.width, height=excluded.height,"
                " rle=excluded.rle, created=excluded.created, interactive=excluded.interactive",
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
                # newest first by creation time (rows of one call share it: then by region id;
                # PostgreSQL has no rowid)
                db.execute(
                    "DELETE FROM predictions WHERE project=? AND task_id=? AND interactive=1 AND region_id NOT IN"
                    " (SELECT region_id FROM predictions WHERE project=? AND task_id=? AND interactive=1"
                    "  ORDER BY created DESC, region_id DESC LIMIT ?)",
                    (project, task_id, project, task_id, INTERACTIVE_KEPT),
                )

    def predictions_for(self, project: str, task_id: int) -> list[PredictedRegion]:
        with self._db(write=False) as db:
            rows = db.execute(
                "SELECT region_id, label, voc_class, kind, box, technique, width, height, rle FROM predictions"
                " WHERE project=? AND task_id=? ORDER BY created, region_id",
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


def annotation_lock(project: str, annotation_id: int) -> str:
    """The lock name that serialises the writers of one annotation's rows (``Tx.lock``)."""
    return f"annotation {project} {annotation_id}"


def write_corrections(db: Tx, project: str, annotation_id: int, updated_at: str, corrections: list[Correction] | None) -> None:
    """Inside a transaction: what the annotation contributes becomes ``corrections`` (None or
    []: nothing; it was deleted, cancelled or has no usable mask). Two transactions writing the
    same annotation at once (PostgreSQL) take turns: each deletes then inserts its rows."""
    db.lock(annotation_lock(project, annotation_id))
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
