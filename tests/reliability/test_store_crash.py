"""Crash safety of the webhook inbox and the statistics, on SQLite and on PostgreSQL: SIGKILL /
SIGTERM while webhooks arrive, restart, every acknowledged event processed once; two processes
writing at once lose nothing; a writer killed mid-transaction leaves whole transactions."""

from __future__ import annotations

import functools
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from backend.database import Database
from backend.migrations import MIGRATIONS
from backend.results import mask_to_rle
from tests.backend.conftest import TOKEN, FakeLabelStudio, image_size, instance_masks
from tests.pgserver import both
from tests.reliability.conftest import LABEL_CONFIG, ROOT, Gunicorn

PROJECT = {"id": 4, "label_config": LABEL_CONFIG}
N_EVENTS = 3000  # annotation ids known to the fake Label Studio (more than a burst sends)
DOG = "2007_000063"


@functools.cache
def dog_brush() -> dict[str, Any]:
    """A submitted brush mask (the VOC dog): scoring it takes a CNN pass and a GrabCut per
    candidate threshold, so a burst outruns the workers, as real corrections do."""
    w, h = image_size(DOG)
    gt = next(m for c, m in instance_masks(DOG) if c == "dog")
    return {
        "id": "r1",
        "type": "brushlabels",
        "from_name": "mask",
        "to_name": "image",
        "original_width": w,
        "original_height": h,
        "value": {"format": "rle", "rle": mask_to_rle(gt), "brushlabels": ["dog"]},
    }


def annotation(aid: int) -> dict[str, Any]:
    return {
        "id": aid,
        "task": aid,
        "project": 4,
        "result": [dog_brush()],
        "was_cancelled": False,
        "updated_at": "2025-01-01T00:00:00Z",
    }


def event(aid: int) -> dict[str, Any]:
    """What LS posts for a submitted annotation (camcut reads the annotation back from LS)."""
    return {
        "action": "ANNOTATION_CREATED",
        "project": PROJECT,
        "annotation": annotation(aid),
        "task": {"id": aid, "data": {"image": f"/data/upload/1/{DOG}.jpg"}},
    }


class Db:
    """The store's database as the test reads it: SQLite in ``md`` (``url`` "") or PostgreSQL."""

    def __init__(self, md: Path, url: str) -> None:
        self.file, self.url = md / "camcut.sqlite3", url

    def integrity(self) -> str:
        """SQLite's file check; PostgreSQL's data are the server's (a killed client cannot tear them)."""
        if self.url:
            return "ok"
        with sqlite3.connect(self.file) as c:
            return str(c.execute("PRAGMA integrity_check").fetchone()[0])

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.url:
            try:
                with Database(self.url, self.file).transaction(write=False) as tx:
                    return [tuple(r) for r in tx.execute(sql).fetchall()]
            except psycopg.errors.UndefinedTable:  # the store has not made its tables yet
                return []
        c = sqlite3.connect(self.file)
        try:
            return c.execute(sql).fetchall()
        except sqlite3.OperationalError as exc:  # the database may not exist yet, or lack a table
            if "no such table" in str(exc):
                return []
            raise
        finally:
            c.close()


@pytest.fixture
def ls_annotations(ls_server: FakeLabelStudio) -> FakeLabelStudio:
    ls_server.projects[4] = PROJECT
    for aid in range(1, N_EVENTS + 1):
        ls_server.annotations[aid] = annotation(aid)
        ls_server.tasks[aid] = {"id": aid, "data": {"image": f"/data/upload/1/{DOG}.jpg"}, "project": 4}
    return ls_server


class Burst:
    """4 clients posting webhooks with new annotation ids. Delivered but not acknowledged: the
    answer was lost with the server (Label Studio would not count on it either)."""

    def __init__(self, g: Gunicorn) -> None:
        self.url = g.url
        self.delivered: set[int] = set()
        self.acked: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._counter = iter(range(1, N_EVENTS + 1))
        self._enough = 0
        self.reached = threading.Event()
        self._pool = ThreadPoolExecutor(4)
        self._futs: list[Any] = []

    def start(self, enough: int) -> None:
        self._enough = enough
        self._futs = [self._pool.submit(self._sender) for _ in range(4)]

    def stop(self) -> None:
        self._stop.set()
        for f in self._futs:
            f.result(timeout=60)
        self._pool.shutdown()

    def _sender(self) -> None:
        s = requests.Session()
        while not self._stop.is_set():
            with self._lock:
                aid = next(self._counter, None)
                if aid is None:
                    return
                self.delivered.add(aid)
            try:
                r = s.post(f"{self.url}/webhook", json=event(aid), timeout=30)
            except requests.RequestException:
                continue  # the server went away mid-request
            if r.status_code == 201:
                with self._lock:
                    self.acked.add(aid)
                    if len(self.acked) >= self._enough:
                        self.reached.set()


def learned(db: Db) -> dict[int, list[str]]:
    """annotation id -> statuses of its learned versions (one row per version in ``events``;
    before the inbox, ``pending`` rows there were claims, not outcomes)."""
    out: dict[int, list[str]] = {}
    for aid, status in db.rows("SELECT annotation_id, status FROM events WHERE status != 'pending'"):
        out.setdefault(int(aid), []).append(status)
    return out


# The burst's size: each event costs the restarted server a CNN pass and GrabCuts (30 took ~150 s
# loaded, nearly all of it the catch-up), and 12 still leave 12 of 12 unprocessed at the kill, where
# the in-memory queue of before lost all but the 2 it had finished. Asserted below for both signals:
# the kill hit acknowledged events not yet processed once the server is gone (SIGTERM included: a
# graceful stop may drain some), so each variant fails on a store that loses a waiting event. SIGTERM
# used to send 60 (the old queue drained 40 of them during the graceful stop and lost 20); today's
# workers leave within seconds of a SIGTERM and drain nothing (measured: 0 of 60 processed, exit
# 2.1 s after the signal), so the 60 only cost the restart 48 more catch-ups, about 30 s a variant.
BURST = 12


@pytest.mark.slow  # about 60 s each, loaded
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
@both
def test_acknowledged_webhooks_survive_a_killed_server(
    tmp_path: Path, ls_annotations: FakeLabelStudio, sig: int, database_url: str
) -> None:
    """Webhooks are processed in the background (the default). Before the inbox, an
    acknowledged event lived in memory: after SIGKILL 28 of 30 (all but the finished ones),
    after SIGTERM 20 of 60 acknowledged events were never processed. Now: killed during a burst, restarted on the
    same MODEL_DIR with no redelivery, every acknowledged event is processed exactly once."""
    md = tmp_path / "md"
    # two candidate thresholds: each event still takes a CNN pass and GrabCuts (a burst outruns
    # the workers), but the restarted server catches up sooner on 2 shared cores
    env = {
        "WORKERS": "2",
        "THREADS": "2",
        "MODEL_DIR": str(md),
        "LABEL_STUDIO_URL": ls_annotations.url,
        "LABEL_STUDIO_API_KEY": TOKEN,
        "CAMCUT_ADAPT_THRESHOLDS": "0.5,0.7",
        "CAMCUT_DATABASE_URL": database_url,
    }
    g = Gunicorn(env, tmp_path / "gunicorn.log")
    try:
        g.wait_up()
        b = Burst(g)
        b.start(BURST)
        b.reached.wait(timeout=60)  # at most 60 s; the assertions below say if too few were acknowledged
        g.kill(sig)  # the whole process group: master and both workers, while the senders post
        b.stop()
    finally:
        g.kill()
    delivered, acked = b.delivered, b.acked
    assert len(acked) >= BURST, Path(g.log.name).read_text()[-2000:]
    db = Db(md, database_url)
    assert db.integrity() == "ok"
    done_at_kill = learned(db)
    waiting_at_kill = sorted(acked - set(done_at_kill))
    # the kill hit acknowledged events not yet processed (after a graceful stop too): the inbox must keep them
    assert waiting_at_kill, f"all {len(acked)} acknowledged events were processed before the server died: no crash tested"

    g2 = Gunicorn(env, tmp_path / "gunicorn2.log")  # the restart: nothing is delivered again
    try:
        g2.wait_up()
        deadline = time.monotonic() + 600
        while not acked <= set(learned(db)) and time.monotonic() < deadline:
            time.sleep(0.2)  # poll interval of a deadline-bounded wait for the restarted workers
        after = learned(db)
        lost = sorted(acked - set(after))
        print(
            f"{signal.Signals(sig).name}: delivered {len(delivered)}, acknowledged {len(acked)}, "
            f"not yet processed at the kill {len(waiting_at_kill)}, lost after restart {len(lost)}"
        )
        assert lost == [], f"{len(lost)} of {len(acked)} acknowledged events never processed: {lost[:10]}"
        assert all(after[a] == ["processed"] for a in acked), after  # processed once: one learned version each
        assert set(after) <= delivered  # nothing invented
        inbox = {int(a): (state, runs) for a, state, runs in db.rows("SELECT annotation_id, state, runs FROM inbox")}
        assert all(inbox[a] == ("done", 1) for a in acked), {a: inbox.get(a) for a in acked if inbox.get(a) != ("done", 1)}
        assert db.integrity() == "ok"
    finally:
        g2.kill(signal.SIGTERM)


# The child processes start together: each prints "ready" once it is set up, then blocks on
# its stdin until the test, having read every "ready", writes a line to all of them (go()).
WRITER = r"""
import sys
from pathlib import Path
from backend.inbox import Inbox, owner_id
from backend.store import Correction, Store, write_corrections
md, base, n, url = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
st = Store(md, url)
inbox, me = Inbox(st, 10**9), owner_id()
print("ready", flush=True)
sys.stdin.readline()
i = 0
while n < 0 or i < n:
    aid = base + i
    assert inbox.put("p", [(aid, "ANNOTATION_CREATED")])
    item = inbox.claim(me, only=("p", aid, "ANNOTATION_CREATED"))
    corr = [Correction(f"r{k}", aid, "box", "cat", "Cat", "F PF 0.5", 0.5, {"F PF 0.3": 0.1, "F PF 0.5": 0.2, "F PF 0.7": 0.3})
            for k in range(2)]
    def learn(db, aid=aid, corr=corr):
        db.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?,?)",
                   ("p", aid, "t", aid, "ANNOTATION_CREATED", "processed", "2", 0.0))
        write_corrections(db, "p", aid, "t", corr)
    assert inbox.finish(item, me, "processed", "2 region(s)", learn)
    print(aid, flush=True)
    i += 1
"""


def _child(code: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=ROOT,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _writer(md: Path, base: int, n: int, url: str) -> subprocess.Popen[str]:
    return _child(WRITER, md, base, n, url)


def go(procs: list[subprocess.Popen[str]]) -> None:
    """Wait until every child has printed "ready", then release them all at once."""
    for p in procs:
        line = p.stdout.readline()  # stdout=PIPE
        assert line == "ready\n", (line, p.wait(timeout=60), p.stderr.read()[-2000:] if p.stderr else "")
    for p in procs:
        p.stdin.write("go\n")  # stdin=PIPE
        p.stdin.flush()


@both
def test_two_processes_write_at_once(tmp_path: Path, database_url: str) -> None:
    md = tmp_path / "md"
    md.mkdir()
    n = 150
    procs = [_writer(md, 0, n, database_url), _writer(md, 100_000, n, database_url)]
    go(procs)
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=False):
        assert p.returncode == 0, err[-2000:]
    db = Db(md, database_url)
    assert db.integrity() == "ok"
    assert db.rows("SELECT status, COUNT(*) FROM events GROUP BY status") == [("processed", 2 * n)]
    assert db.rows("SELECT COUNT(*) FROM corrections") == [(4 * n,)]
    assert db.rows("SELECT COUNT(*) FROM scores") == [(12 * n,)]


@both
def test_sigkill_store_writer_mid_transaction(tmp_path: Path, database_url: str) -> None:
    from backend.store import Store

    md = tmp_path / "md"
    md.mkdir()
    p = _writer(md, 0, -1, database_url)  # writes until killed
    go([p])
    done = []
    for line in p.stdout or ():  # stdout=PIPE
        done.append(int(line))
        if len(done) >= 200:
            break
    p.kill()  # SIGKILL the process we started, in the middle of its write loop
    p.wait(timeout=30)
    done += [int(x) for x in (p.stdout.read() if p.stdout else "").split()]
    db = Db(md, database_url)
    assert db.integrity() == "ok"
    ev = dict(db.rows("SELECT annotation_id, status FROM events"))
    assert all(ev[a] == "processed" for a in done)
    # transactions are atomic: an annotation has all of its corrections and scores or none
    per = db.rows(
        "SELECT c.annotation_id, COUNT(DISTINCT c.region_key),"
        " (SELECT COUNT(*) FROM scores s WHERE s.annotation_id=c.annotation_id)"
        " FROM corrections c GROUP BY c.annotation_id",
    )
    assert all(k == 2 and s == 6 for _, k, s in per), per[:5]
    assert {a for a, _, _ in per} >= set(done)
    waiting = db.rows("SELECT annotation_id, state FROM inbox WHERE state != 'done'")
    assert len(waiting) <= 1 and all(a not in done for a, _ in waiting)
    from backend.inbox import Inbox, owner_id

    inbox = Inbox(Store(md, database_url), 10**9)  # "restart": the killed writer's claim is taken over, a finished one is not
    for a, _ in waiting:
        # PostgreSQL: the killed writer's presence lock ends when the server has seen its socket close
        deadline = time.monotonic() + 30
        while (item := inbox.claim(owner_id())) is None and time.monotonic() < deadline:
            time.sleep(0.05)  # poll interval of a deadline-bounded wait for the server
        assert item is not None and item.annotation_id == a
    assert inbox.claim(owner_id()) is None
    assert inbox.claim(owner_id(), only=("p", done[0], "ANNOTATION_CREATED")) is None


@both
def test_a_live_claim_is_not_taken_over(tmp_path: Path, database_url: str) -> None:
    """A claim whose owner is alive (another process: on PostgreSQL, possibly on another host)
    stays with it; killed, its claim is taken over."""
    from backend.inbox import Inbox, owner_id
    from backend.store import Store

    md = tmp_path / "md"
    md.mkdir()
    holder = _child(CLAIMER, md, database_url)
    go([holder])
    assert holder.stdout is not None and holder.stdout.readline() == "claimed\n", (
        holder.stderr.read()[-2000:] if holder.stderr else ""
    )
    inbox = Inbox(Store(md, database_url), 10**9)
    try:
        assert inbox.claim(owner_id()) is None  # alive: not ours to take
    finally:
        holder.kill()
        holder.wait(timeout=30)
    deadline = time.monotonic() + 30
    while (item := inbox.claim(owner_id())) is None and time.monotonic() < deadline:
        time.sleep(0.05)  # poll interval of a deadline-bounded wait for the server to see the socket close
    assert item is not None and item.annotation_id == 1


CLAIMER = """
import sys
from pathlib import Path
from backend.inbox import Inbox, owner_id
from backend.store import Store
inbox = Inbox(Store(Path(sys.argv[1]), sys.argv[2]), 10)
print("ready", flush=True)
sys.stdin.readline()
assert inbox.put("p", [(1, "ANNOTATION_CREATED")])
assert inbox.claim(owner_id()) is not None
print("claimed", flush=True)
sys.stdin.readline()  # holds the claim until killed
"""


def test_reused_pid_does_not_keep_a_dead_claim() -> None:
    """After a container restart the new worker often has the dead worker's pid: a claim by
    "pid <ours>" with another start time is dead, ours (same pid and start) is alive."""
    import os

    from backend.inbox import owner_alive, owner_id

    assert owner_alive(owner_id())
    assert not owner_alive(f"pid {os.getpid()} start 1")
    assert not owner_alive("pid 999999999 start 1") and not owner_alive("pid 7") and not owner_alive(None)


OPENER = """
import sys
from pathlib import Path
from backend.store import Store
print("ready", flush=True)
sys.stdin.readline()
Store(Path(sys.argv[1]), sys.argv[2])
"""


@both
def test_processes_opening_a_new_store_at_once(tmp_path: Path, database_url: str, request: Any) -> None:
    """Gunicorn workers (or replicas) start together on an empty store: switching the new SQLite
    file to WAL raced ("database is locked" at once, 11 of 160 openings before the retry was
    added); on PostgreSQL the migration runs once, under its lock."""
    for round_ in range(12 if not database_url else 4):
        md = tmp_path / f"md{round_}"
        md.mkdir()
        url = request.getfixturevalue("postgres").create_database() if database_url else ""
        procs = [_child(OPENER, md, url) for _ in range(4)]
        go(procs)
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err[-2000:]
        db = Db(md, url)
        assert db.integrity() == "ok"
        assert db.rows("SELECT version FROM schema_version ORDER BY version") == [(n,) for n, _ in MIGRATIONS]
