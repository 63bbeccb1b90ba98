"""The webhook inbox: every accepted event is a row of ``inbox`` in the store's SQLite database
before ``/webhook`` answers, and is processed from there once, by whichever process is alive.

A row is keyed on (project the event names, annotation id, action). A delivery of a key that
is still waiting merges into it (processing reads Label Studio's current record anyway); one
that arrives after the key was processed re-arms it; one that arrives while it is being
processed sets ``again``, so that it runs once more afterwards. States: ``pending`` ->
``claimed`` (``owner``: the process) -> ``done``. Finishing a row and writing what it learned
happen in one transaction, so a crash leaves either both or neither. A claim whose owner died
(SIGKILL, OOM, a SIGTERM'd worker that did not finish) is taken over by any live process.

An owner is "pid N start T run R" (T: the process's start time in clock ticks since boot, from
``/proc``): after a container restart the new worker often gets the dead one's pid, and the pid
alone would keep that claim "alive" forever. On SQLite every process shares one host, and a
claim is alive while that process runs. On PostgreSQL the replicas may be on other hosts, whose
processes cannot be looked up: a claiming process holds a session advisory lock named after its
owner id (``Database.hold``; R, random per process, keeps ids of two hosts apart), and a claim
is alive while that lock is held. The lock ends with the owner's connection: at once for a
killed process (its socket closes), within the keepalive time for a vanished host. A claim taken
over while its owner still works is harmless: ``finish`` writes only for the current owner.

Locking on PostgreSQL (READ COMMITTED; SQLite's BEGIN IMMEDIATE serialises writers anyway):
``claim`` locks the one row it checks with ``FOR UPDATE SKIP LOCKED`` (two claimers never get
the same row, nor wait for each other), ``finish`` locks its row (a delivery arriving meanwhile
waits, then re-arms the finished row), ``put`` takes a lock so that the bound of waiting events
is exact.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from .database import Tx
from .store import Store

Apply = Callable[[Tx], None]


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


_run: tuple[int, str] = (0, "")


def owner_id() -> str:
    global _run
    if _run[0] != os.getpid():  # a new process (also a forked worker): a new random run id
        _run = (os.getpid(), secrets.token_hex(8))
    return f"pid {os.getpid()} start {_start_time(os.getpid()) or '?'} run {_run[1]}"


def presence(owner: str) -> str:
    """The name of the lock a live owner holds on PostgreSQL."""
    return f"camcut owner {owner}"


def owner_alive(owner: str | None) -> bool:
    """Is the process that claimed a row still running (on this host)?"""
    parts = (owner or "").split()
    if len(parts) < 4 or parts[0] != "pid" or not parts[1].isdigit() or parts[2] != "start":
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
            db.lock("camcut inbox put")
            waiting = db.execute("SELECT COUNT(*) FROM inbox WHERE state != 'done'").fetchone()[0]
            if waiting + len(keys) > self.max_pending:
                return False
            # In SET, inbox.<column> is the row's value before the update (both engines).
            db.executemany(
                "INSERT INTO inbox (project, annotation_id, action, state, deliveries, received) VALUES (?,?,?,'pending',1,?)"
                " ON CONFLICT (project, annotation_id, action) DO UPDATE SET deliveries = inbox.deliveries + 1,"
                " again = CASE WHEN inbox.state = 'claimed' THEN 1 ELSE inbox.again END,"
                " received = CASE WHEN inbox.state = 'done' THEN excluded.received ELSE inbox.received END,"
                " attempts = CASE WHEN inbox.state = 'done' THEN 0 ELSE inbox.attempts END,"
                " state = CASE WHEN inbox.state = 'done' THEN 'pending' ELSE inbox.state END",
                [(project, aid, action, now) for aid, action in keys],
            )
        return True

    def alive(self, db: Tx, owner: str | None) -> bool:
        if db.pg:
            return owner is not None and not db.lock_is_free(presence(owner))
        return owner_alive(owner)

    def claim(self, owner: str, only: tuple[str, int, str] | None = None) -> Item | None:
        """The oldest pending row, or one claimed by a dead process, now claimed by ``owner``."""
        where, args = "state IN ('pending', 'claimed')", ()  # type: tuple[str, tuple[str | int, ...]]
        if only is not None:
            where, args = where + " AND project=? AND annotation_id=? AND action=?", only
        self.store.db.hold(presence(owner))  # PostgreSQL: our claims are alive while we hold it
        with self.store.transaction() as db:
            rows = db.execute(
                f"SELECT project, annotation_id, action FROM inbox WHERE {where} ORDER BY received LIMIT 500", args
            ).fetchall()
            for key in rows:
                # the candidate again, locked (PostgreSQL: skipped if another claimer has it now)
                row = db.execute(
                    "SELECT state, owner, attempts FROM inbox WHERE project=? AND annotation_id=? AND action=?"
                    + (" FOR UPDATE SKIP LOCKED" if db.pg else ""),
                    key,
                ).fetchone()
                if row is None:
                    continue
                state, old, attempts = row
                if state == "pending" or (state == "claimed" and not self.alive(db, old)):
                    db.execute(
                        "UPDATE inbox SET state='claimed', owner=? WHERE project=? AND annotation_id=? AND action=?",
                        (owner, *key),
                    )
                    return Item(key[0], int(key[1]), key[2], int(attempts))
        return None

    def finish(self, item: Item, owner: str, outcome: str, detail: str, apply: Apply | None = None, drop: bool = False) -> bool:
        """Write what was learned (``apply``) and close the row, in one transaction. ``drop``:
        delete the row instead (an event about an annotation Label Studio never had: a forged
        flood must not grow the database). False: the claim was lost (nothing written)."""
        key = (item.project, item.annotation_id, item.action)
        with self.store.transaction() as db:
            row = db.execute(
                "SELECT state, owner, again FROM inbox WHERE project=? AND annotation_id=? AND action=?" + db.for_update, key
            ).fetchone()
            if row is None or row[0] != "claimed" or row[1] != owner:
                return False
            if apply is not None:
                apply(db)
            if drop and not row[2]:
                db.execute("DELETE FROM inbox WHERE project=? AND annotation_id=? AND action=?", key)
            else:
                db.execute(
                    "UPDATE inbox SET state = CASE WHEN again <> 0 THEN 'pending' ELSE 'done' END, again=0, owner=NULL,"
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
