"""The database seam (backend/database.py) on SQLite and on a real PostgreSQL server: one SQL
dialect for both (placeholders, types, upserts), numbered migrations (a pre-versioning SQLite
store upgrades in place), and the locking that keeps read-check-write atomic on PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from backend.database import Database, pg_sql
from backend.migrations import MIGRATIONS, adopt_unversioned
from backend.store import Correction, Store, write_corrections
from tests.pgserver import both

# a later module's table, added as the next migration
NEXT = max(n for n, _ in MIGRATIONS) + 1
HEADS = (
    NEXT,
    "CREATE TABLE probe_heads (project TEXT NOT NULL, name TEXT NOT NULL, weights BLOB NOT NULL, fitted REAL NOT NULL,"
    " n INTEGER NOT NULL, PRIMARY KEY (project, name))",
)


def test_placeholders_become_psycopg_format_outside_quotes() -> None:
    """``?`` in a string literal stays; ``%`` is doubled everywhere (psycopg would read it)."""
    sql = "SELECT * FROM t WHERE a=? AND b LIKE 'x%?' AND c='it''s ?' AND d=? AND e LIKE ?||'%'"
    assert pg_sql(sql) == "SELECT * FROM t WHERE a=%s AND b LIKE 'x%%?' AND c='it''s ?' AND d=%s AND e LIKE %s||'%%'"
    assert pg_sql("SELECT 5 % 3, ?") == "SELECT 5 %% 3, %s"


@both
def test_types_upserts_and_migrations_on_both_engines(tmp_path: Path, database_url: str) -> None:
    db = Database(database_url, tmp_path / "camcut.sqlite3")
    assert db.migrate([*MIGRATIONS, HEADS]) == NEXT
    assert db.migrate([*MIGRATIONS, HEADS]) == NEXT  # applied once
    blob, fitted = bytes(range(256)) * 40, 1_764_590_000.123456  # a float64 timestamp: REAL must keep it
    upsert = (
        "INSERT INTO probe_heads VALUES (?,?,?,?,?) ON CONFLICT (project, name) DO UPDATE SET weights=excluded.weights,"
        " fitted=excluded.fitted, n=probe_heads.n + excluded.n"
    )
    with db.transaction() as tx:
        tx.execute(upsert, ("p", "dog", b"old", 0.0, 1))
        tx.execute(upsert, ("p", "dog", blob, fitted, 2**40))  # INTEGER is 64-bit on both
    with db.transaction(write=False) as tx:
        weights, got, n = tx.execute("SELECT weights, fitted, n FROM probe_heads WHERE project=?", ("p",)).fetchone()
    assert bytes(weights) == blob and got == fitted and n == 2**40 + 1
    # TEXT compares byte-wise on both (updated_at strings decide what is newer); % and ? in literals
    with db.transaction() as tx:
        assert (
            tx.execute("SELECT COUNT(*) FROM probe_heads WHERE name LIKE 'd%' AND project <> '?' AND n > ?", (0,)).fetchone()[0]
            == 1
        )
        tx.executemany(
            "INSERT INTO probe_heads VALUES (?,?,?,?,?)", [("q", k, b"", 0.0, 0) for k in ("a", "B", "_", "a.b", "a-b")]
        )
        order = [r[0] for r in tx.execute("SELECT name FROM probe_heads WHERE project='q' ORDER BY name").fetchall()]
    assert order == sorted(["a", "B", "_", "a.b", "a-b"])


def test_an_unversioned_sqlite_store_upgrades_in_place(tmp_path: Path) -> None:
    """A MODEL_DIR from before schema_version (and before predictions.interactive) keeps its rows."""
    path = tmp_path / "camcut.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE predictions (project TEXT NOT NULL, task_id INTEGER NOT NULL, region_id TEXT NOT NULL,
            label TEXT NOT NULL, voc_class TEXT, kind TEXT NOT NULL, box TEXT, technique TEXT NOT NULL,
            model_version TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL, rle TEXT NOT NULL,
            created REAL NOT NULL, PRIMARY KEY (project, task_id, region_id));
        INSERT INTO predictions VALUES ('p', 1, 'r1', 'dog', 'dog', 'box', NULL, 'fpf 0.5', 'v', 4, 4, '[16]', 1.0);
        CREATE TABLE scores (project TEXT NOT NULL, annotation_id INTEGER NOT NULL, region_key TEXT NOT NULL,
            kind TEXT NOT NULL, voc_class TEXT NOT NULL, technique TEXT NOT NULL, iou REAL NOT NULL,
            PRIMARY KEY (project, annotation_id, region_key, technique));
        INSERT INTO scores VALUES ('p', 7, 'r1', 'box', 'dog', 'fpf 0.5', 0.75);
        """
    )
    old.close()
    st = Store(tmp_path)
    assert st.schema_version == max(n for n, _ in MIGRATIONS)
    assert [p.region_id for p in st.predictions_for("p", 1)] == ["r1"]
    assert st.technique_scores("p") == {("box", "dog"): {"fpf 0.5": (0.75, 1)}}
    with st.transaction(write=False) as tx:
        assert tx.execute("SELECT interactive FROM predictions").fetchall() == [(0,)]
    assert Database("", path).migrate(MIGRATIONS, adopt_unversioned) == st.schema_version  # again: nothing to do


def correction(key: str) -> Correction:
    return Correction(key, 1, "box", "dog", "dog", None, None, {"fpf 0.5": 0.5})


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_writers_of_one_annotation_take_turns(tmp_path: Path, database_url: str) -> None:
    """PostgreSQL runs transactions concurrently: two writers of one annotation's corrections (two
    replicas on two deliveries) each delete, then insert. Without the annotation lock the second
    one's DELETE missed the first one's uncommitted rows and its INSERT failed on the key."""
    st = Store(tmp_path, database_url)
    first_wrote, errors = threading.Event(), []
    release = threading.Event()

    def first() -> None:
        with st.transaction() as tx:
            write_corrections(tx, "p", 1, "t1", [correction("r1")])
            first_wrote.set()
            release.wait(60)  # commit only once the second writer is waiting on the database

    def second() -> None:
        first_wrote.wait(60)
        try:
            with st.transaction() as tx:
                write_corrections(tx, "p", 1, "t2", [correction("r1")])
        except Exception as exc:  # the failure mode without the lock: a unique violation
            errors.append(exc)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not errors:
        with st.db.transaction(write=False) as tx:
            waiting = tx.execute(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()[0]
        if waiting:
            break
        time.sleep(0.02)  # poll interval of a deadline-bounded wait for the second writer to block
    release.set()
    for t in threads:
        t.join(60)
    assert errors == []
    with st.transaction(write=False) as tx:
        assert tx.execute("SELECT region_key, updated_at FROM corrections").fetchall() == [("r1", "t2")]
