"""The webhook inbox: every accepted event is a row of ``inbox`` in the store's SQLite database
before ``/webhook`` answers, and is processed from there once, by whichever process is alive.

A row is keyed on (project the event names, annotation id, action). A delivery of a key that
is still waiting merges into it (processing reads Label Studio's current record anyway); one
that arrives after the key was processed re-arms it; one that arrives while it is being
processed sets ``again``, so that it runs once more afterwards. States: ``pending`` ->
``claimed`` (``owner``: the process) -> ``done``. Finishing a row and writing what it learned
happen in one transaction, so a crash leaves either both or neither. A claim whose owner died
(SIGKILL, OOM, a SIGTERM'd worker that did not finish) is taken over by any live process.

An owner is "pid N start T" (T: the process's start time in clock ticks since boot, from
``/proc``): after a container restart the new worker often gets the dead one's pid, and the pid
alone would keep that claim "alive" forever.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass

from .store import Store

Apply = Callable[[sqlite3.Connection], None]


@dataclass(frozen=True)
class Item:
    project: str
    annotation_id: int
    action: str
    attempts: int


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat (None: no such process, or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == b"Z":  # killed, not reaped yet: dead for our purpose
        return None
    return fields[19].decode()


def owner_id() -> str:
    return f"pid {os.getpid()} start {_start_time(os.getpid()) or '?'}"


def owner_alive(owner: str | None) -> bool:
    """Is the process that claimed a row still running (on this host)?"""
    parts = (owner or "").split()
    if len(parts) != 4 or parts[0] != "pid" or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if not os.path.isdir("/proc/self"):  # no procfs: the pid alone (may keep a reused pid's claim)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return True
    return _start_time(pid) == parts[3]


class Inbox:
    def __init__(self, store: Store, max_pending: int) -> None:
        self.store = store
        self.max_pending = max_pending

    def put(self, project: str, keys: list[tuple[int, str]]) -> bool:
        """Record deliveries (committed when this returns). False: the inbox is full (nothing
        recorded); the caller answers 503 so that the sender may retry."""
        now = time.time()
        with self.store.transaction() as db:
            waiting = db.execute("SELECT COUNT(*) FROM inbox WHERE state != 'done'").fetchone()[0]
            if waiting + len(keys) > self.max_pending:
                return False
            # In SET, column names are the row's values before the update.
            db.executemany(
                "INSERT INTO inbox (project, annotation_id, action, state, deliveries, received) VALUES (?,?,?,'pending',1,?)"
                " ON CONFLICT (project, annotation_id, action) DO UPDATE SET deliveries = deliveries + 1,"
                " again = CASE WHEN state = 'claimed' THEN 1 ELSE again END,"
                " received = CASE WHEN state = 'done' THEN excluded.received ELSE received END,"
                " attempts = CASE WHEN state = 'done' THEN 0 ELSE attempts END,"
                " state = CASE WHEN state = 'done' THEN 'pending' ELSE state END",
                [(project, aid, action, now) for aid, action in keys],
            )
        return True

    def claim(self, owner: str, only: tuple[str, int, str] | None = None) -> Item | None:
        """The oldest pending row, or one claimed by a dead process, now claimed by ``owner``."""
        where, args = "state IN ('pending', 'claimed')", ()  # type: tuple[str, tuple[str | int, ...]]
        if only is not None:
            where, args = where + " AND project=? AND annotation_id=? AND action=?", only
        with self.store.transaction() as db:
            rows = db.execute(
                f"SELECT project, annotation_id, action, state, owner, attempts FROM inbox WHERE {where}"
                " ORDER BY received LIMIT 500",
                args,
            ).fetchall()
            for project, aid, action, state, old, attempts in rows:
                if state == "pending" or not owner_alive(old):
                    db.execute(
                        "UPDATE inbox SET state='claimed', owner=? WHERE project=? AND annotation_id=? AND action=?",
                        (owner, project, aid, action),
                    )
                    return Item(project, int(aid), action, int(attempts))
        return None

    def finish(self, item: Item, owner: str, outcome: str, detail: str, apply: Apply | None = None, drop: bool = False) -> bool:
        """Write what was learned (``apply``) and close the row, in one transaction. ``drop``:
        delete the row instead (an event about an annotation Label Studio never had: a forged
        flood must not grow the database). False: the claim was lost (nothing written)."""
        key = (item.project, item.annotation_id, item.action)
        with self.store.transaction() as db:
            row = db.execute(
                "SELECT state, owner, again FROM inbox WHERE project=? AND annotation_id=? AND action=?", key
            ).fetchone()
            if row is None or row[0] != "claimed" or row[1] != owner:
                return False
            if apply is not None:
                apply(db)
            if drop and not row[2]:
                db.execute("DELETE FROM inbox WHERE project=? AND annotation_id=? AND action=?", key)
            else:
                db.execute(
                    "UPDATE inbox SET state = CASE WHEN again THEN 'pending' ELSE 'done' END, again=0, owner=NULL,"
                    " runs = runs + 1, outcome=?, detail=?, finished=? WHERE project=? AND annotation_id=? AND action=?",
                    (outcome, detail, time.time(), *key),
                )
        return True

    def release(self, item: Item, owner: str, detail: str) -> None:
        """Give a claimed row back (Label Studio unreachable, the key refused: try again later)."""
        with self.store.transaction() as db:
            db.execute(
                "UPDATE inbox SET state='pending', owner=NULL, attempts=attempts+1, detail=?"
                " WHERE project=? AND annotation_id=? AND action=? AND owner=?",
                (detail, item.project, item.annotation_id, item.action, owner),
            )

    def waiting(self) -> int:
        with self.store.transaction(write=False) as db:
            return int(db.execute("SELECT COUNT(*) FROM inbox WHERE state != 'done'").fetchone()[0])
