"""The store's schema, as numbered migrations applied in order on SQLite and PostgreSQL alike
(``backend/database.py`` records them in ``schema_version`` and translates the column types).

To add tables or columns: append ``(next number, "SQL; SQL")`` to :data:`MIGRATIONS` (never
edit an applied one: databases in use already have it). Write the portable subset: ``TEXT``,
``INTEGER``, ``REAL``, ``BLOB`` columns, explicit primary keys, ``CREATE INDEX``, ``ALTER TABLE
... ADD COLUMN``; statements are split on ``;`` (no ``;`` inside a statement).
"""

from __future__ import annotations

from typing import Any

# 1: the schema of the SQLite store before versioning (a database made then is adopted as 1).
BASE = """
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
)
"""

# 2: the learned heads (backend/learning.py): per-object training samples, the kept heads
# (one row per class, '' = project-wide) and the log of fits; arrays are np.savez bytes.
HEADS = """
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
)
"""

MIGRATIONS: list[tuple[int, str]] = [
    (1, BASE),
    (2, HEADS),
]


def adopt_unversioned(tx: Any) -> None:
    """A SQLite store made before ``schema_version`` existed: its tables are migration 1's
    (``CREATE TABLE IF NOT EXISTS`` keeps them), except that the oldest lack
    ``predictions.interactive`` (added when interactive rows were bounded)."""
    if tx.pg:
        return  # PostgreSQL stores were versioned from the start
    cols = {r[1] for r in tx.execute("PRAGMA table_info(predictions)").fetchall()}
    if cols and "interactive" not in cols:
        tx.execute("ALTER TABLE predictions ADD COLUMN interactive INTEGER NOT NULL DEFAULT 0")
