"""Crash safety of the SQLite statistics: SIGKILL while webhooks are being recorded, restart,
nothing lost or counted twice; two processes writing at once lose nothing."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.reliability.conftest import LABEL_CONFIG, ROOT, FaultServer, Gunicorn

PROJECT = {"id": 4, "label_config": LABEL_CONFIG}


def event(aid: int) -> dict[str, Any]:
    """A cheap event: a submitted annotation without a brush mask (recorded as 'ignored')."""
    return {"action": "ANNOTATION_CREATED", "project": PROJECT,
            "annotation": {"id": aid, "updated_at": "2025-01-01T00:00:00Z", "result": [], "was_cancelled": False},
            "task": {"id": aid, "data": {"image": "/img/x.jpg"}}}


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as c:
        return c.execute("PRAGMA integrity_check").fetchone()[0]


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    c = sqlite3.connect(db)
    try:
        return c.execute(sql).fetchall()
    finally:
        c.close()


@pytest.mark.slow  # 26 s
def test_sigkill_gunicorn_while_recording_webhooks(tmp_path: Path, fault_server: FaultServer, camnet: Any) -> None:
    md = tmp_path / "md"
    g = Gunicorn({"WORKERS": "2", "THREADS": "2", "MODEL_DIR": str(md), "CAMCUT_WEBHOOK_SYNC": "1",
                  "LABEL_STUDIO_URL": fault_server.url}, tmp_path / "gunicorn.log")
    delivered: set[int] = set()
    acked: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()
    enough = threading.Event()  # set by the sender whose acknowledgement is the 150th
    counter = iter(range(1, 10**6))
    try:
        g.wait_up()

        def sender() -> None:
            s = requests.Session()
            while not stop.is_set():
                with lock:
                    aid = next(counter)
                    delivered.add(aid)
                try:
                    r = s.post(f"{g.url}/webhook", json=event(aid), timeout=30)
                except requests.RequestException:
                    continue  # killed mid-request: delivered, not acknowledged
                if r.status_code == 201 and r.json().get("status") == "ignored":
                    with lock:
                        acked.add(aid)
                        if len(acked) >= 150:
                            enough.set()

        with ThreadPoolExecutor(4) as pool:
            futs = [pool.submit(sender) for _ in range(4)]
            enough.wait(timeout=60)  # at most 60 s; the assertion below says if too few were acknowledged
            g.kill()  # SIGKILL master and both workers while the senders are still posting
            stop.set()
            for f in futs:
                f.result(timeout=60)
    finally:
        stop.set()
        g.kill()
    assert len(acked) >= 20, Path(g.log.name).read_text()[-2000:]
    db = md / "camcut.sqlite3"
    assert integrity(db) == "ok"
    recorded = dict(rows(db, "SELECT annotation_id, status FROM events"))
    assert acked <= set(recorded) <= delivered  # every acknowledged event is there, nothing invented
    assert all(recorded[a] == "ignored" for a in acked)
    assert set(recorded.values()) <= {"ignored", "pending"}
    print(f"delivered {len(delivered)}, acknowledged {len(acked)}, recorded {len(recorded)}, "
          f"pending at kill {sum(v == 'pending' for v in recorded.values())}")

    # restart on the same MODEL_DIR; LS re-delivers everything (twice)
    from backend.app import create_app
    from backend.config import Settings

    app = create_app(Settings.from_env({"MODEL_DIR": str(md), "CAMCUT_WEBHOOK_SYNC": "1", "LABEL_STUDIO_URL": fault_server.url}),
                     net=camnet)
    c = app.test_client()
    statuses = {aid: c.post("/webhook", json=event(aid)).get_json()["status"] for aid in sorted(delivered)}
    assert all(statuses[a] == "duplicate" for a in acked)
    assert all(statuses[a] == "ignored" for a in delivered - set(recorded))
    assert all(statuses[a] == "ignored" for a in recorded if recorded[a] == "pending")  # orphaned claims are taken over
    assert all(c.post("/webhook", json=event(a)).get_json()["status"] == "duplicate" for a in sorted(delivered))
    assert integrity(db) == "ok"
    assert rows(db, "SELECT COUNT(*), COUNT(DISTINCT annotation_id) FROM events") == [(len(delivered), len(delivered))]
    assert c.get("/metrics").get_json()["projects"]["4"]["events"] == {"ignored": len(delivered)}


# The child processes start together: each prints "ready" once it is set up, then blocks on
# its stdin until the test, having read every "ready", writes a line to all of them (go()).
WRITER = r"""
import sys
from pathlib import Path
from backend.store import Correction, Store
md, base, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
st = Store(md)
print("ready", flush=True)
sys.stdin.readline()
i = 0
while n < 0 or i < n:
    aid = base + i
    assert st.claim_event("p", aid, "t", aid, "ANNOTATION_CREATED") == "new"
    corr = [Correction(f"r{k}", aid, "box", "cat", "Cat", "F PF 0.5", 0.5, {"F PF 0.3": 0.1, "F PF 0.5": 0.2, "F PF 0.7": 0.3})
            for k in range(2)]
    st.save_corrections("p", aid, "t", corr)
    st.finish_event("p", aid, "t", "processed", "2 region(s)")
    print(aid, flush=True)
    i += 1
"""


def _child(code: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _writer(md: Path, base: int, n: int) -> subprocess.Popen[str]:
    return _child(WRITER, md, base, n)


def go(procs: list[subprocess.Popen[str]]) -> None:
    """Wait until every child has printed "ready", then release them all at once."""
    for p in procs:
        line = p.stdout.readline()  # stdout=PIPE
        assert line == "ready\n", (line, p.wait(timeout=60), p.stderr.read()[-2000:] if p.stderr else "")
    for p in procs:
        p.stdin.write("go\n")  # stdin=PIPE
        p.stdin.flush()


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    md = tmp_path / "md"
    md.mkdir()
    n = 150
    procs = [_writer(md, 0, n), _writer(md, 100_000, n)]
    go(procs)
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=False):
        assert p.returncode == 0, err[-2000:]
    db = md / "camcut.sqlite3"
    assert integrity(db) == "ok"
    assert rows(db, "SELECT status, COUNT(*) FROM events GROUP BY status") == [("processed", 2 * n)]
    assert rows(db, "SELECT COUNT(*) FROM corrections") == [(4 * n,)]
    assert rows(db, "SELECT COUNT(*) FROM scores") == [(12 * n,)]


def test_sigkill_store_writer_mid_transaction(tmp_path: Path) -> None:
    from backend.store import Store

    md = tmp_path / "md"
    md.mkdir()
    p = _writer(md, 0, -1)  # writes until killed
    go([p])
    done = []
    for line in p.stdout:  # stdout=PIPE
        done.append(int(line))
        if len(done) >= 200:
            break
    p.kill()  # SIGKILL the process we started, in the middle of its write loop
    p.wait(timeout=30)
    done += [int(x) for x in p.stdout.read().split()]
    db = md / "camcut.sqlite3"
    assert integrity(db) == "ok"
    ev = dict(rows(db, "SELECT annotation_id, status FROM events"))
    assert all(ev[a] == "processed" for a in done)
    # transactions are atomic: an annotation has all of its corrections and scores or none
    per = rows(db, "SELECT c.annotation_id, COUNT(DISTINCT c.region_key), (SELECT COUNT(*) FROM scores s WHERE s.annotation_id=c.annotation_id)"
                   " FROM corrections c GROUP BY c.annotation_id")
    assert all(k == 2 and s == 6 for _, k, s in per), per[:5]
    assert {a for a, _, _ in per} >= set(done)
    pending = [a for a, s in ev.items() if s == "pending"]
    assert len(pending) <= 1
    st = Store(md)  # "restart": the claim of the killed writer is taken over, a finished one is not recounted
    for a in pending:
        assert st.claim_event("p", a, "t", a, "ANNOTATION_CREATED") == "new"
    assert st.claim_event("p", done[0], "t", done[0], "ANNOTATION_CREATED") == "duplicate"


OPENER = """
import sys
from pathlib import Path
from backend.store import Store
print("ready", flush=True)
sys.stdin.readline()
Store(Path(sys.argv[1]))
"""


def test_processes_opening_a_new_store_at_once(tmp_path: Path) -> None:
    """Gunicorn workers start together on an empty MODEL_DIR: switching the new file to WAL
    raced ("database is locked" at once, 11 of 160 openings before the retry was added)."""
    for round_ in range(12):
        md = tmp_path / f"md{round_}"
        md.mkdir()
        procs = [_child(OPENER, md) for _ in range(4)]
        go(procs)
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err[-2000:]
        assert integrity(md / "camcut.sqlite3") == "ok"
