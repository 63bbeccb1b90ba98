"""End to end: ``camcut bulk --scheduler tcp://...`` on a real Dask cluster against a real Label
Studio 1.23.2, with a machine lost and the client killed on the way.

A ``dask scheduler`` and two ``dask worker`` processes over loopback TCP (``--nthreads 1``, each
in a session of its own, as on two hosts: the session's cluster, tests/conftest.py, which
tests/backend/test_bulk_cluster.py uses too); a project with 6 real VOC images and their VOC
boxes as predictions. The bulk command runs as a user runs it (a subprocess):

1. once a task is recorded, a worker that is running a task (asked of the scheduler) is
   SIGKILLed with its nanny: its tasks must be predicted again by the other worker;
2. once half the tasks are recorded, the client itself is SIGKILLed;
3. a new worker joins and the same command runs again: it must skip what is done (state file,
   or LS's own prediction for a task posted but not recorded) and finish the rest.

Then every task has exactly one camcut prediction, and its masks are the ones the engine makes
for that task in this process (the RLE decoded and compared pixel for pixel).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from bench.cluster import LocalDaskCluster  # noqa: E402
from tests.conftest import restore_workers  # noqa: E402
from tests.e2e.label_studio import DEMO_LABEL_CONFIG, create_voc_project  # noqa: E402

pytestmark = pytest.mark.e2e

# 6 tasks are enough for every step: after the first is recorded 5 are left, so both workers
# are busy when one is killed; the client is killed at 3 recorded, with 3 left (the ones in
# flight are posted but not recorded: LS's own prediction makes the rerun skip them). Each
# task more costs two engine runs (on a worker, and the pixel-for-pixel oracle below); the
# masks' equality with the engine is a per-task check, which a 7th task would only repeat.
STEMS = (
    "2007_000063",
    "2007_000528",
    "2007_000170",
    "2007_000549",
    "2007_000720",
    "2007_000733",
)
DEADLINE_S = 600.0


def records(path: Path) -> list[dict[str, Any]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a torn last line (the client was killed mid-write)
    return out


def wait_until(cond: Any, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        assert proc.poll() is None, f"the bulk command exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # poll interval of a deadline-bounded wait on the state file


def masks(result: list[dict[str, Any]]) -> list[np.ndarray]:
    return [
        np.asarray(decode_rle(r["value"]["rle"])).reshape(r["original_height"], r["original_width"], 4)[:, :, 3] > 0
        for r in result
    ]


def test_bulk_on_a_dask_cluster_survives_a_dead_worker_and_a_killed_client(
    label_studio: Any, dask_cluster: LocalDaskCluster, tmp_path: Path
) -> None:
    proj, by_stem = create_voc_project(label_studio, "camcut bulk on dask", STEMS)
    pid = proj["id"]
    model_dir = tmp_path / "model_dir"
    state = model_dir / f"bulk-{pid}.jsonl"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CAMCUT_", "LABEL_STUDIO_", "BASIC_AUTH_"))},
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "MODEL_DIR": str(model_dir),
    }
    cluster = dask_cluster
    try:
        cmd = [sys.executable, "-m", "backend.bulk", "--project", str(pid), "--scheduler", cluster.address]
        log1 = open(tmp_path / "client1.log", "wb")  # noqa: SIM115
        client1 = subprocess.Popen(cmd, cwd=_REPO_ROOT, env=env, stdout=log1, stderr=subprocess.STDOUT)
        try:
            # 1. a worker dies while it runs a task (synchronised on progress: one task recorded)
            wait_until(lambda: len(records(state)) >= 1, client1, "the first task was recorded")
            with cluster.client() as c:
                info = c.scheduler_info(n_workers=-1)["workers"]
                busy = {a: ks for a, ks in c.processing().items() if ks}
            assert busy, f"no worker was running a task with {len(STEMS) - 1} tasks to go"
            killed, keys = next(iter(busy.items()))
            cluster.kill_worker(int(info[killed]["name"][1:]))
            # 2. the client dies half way
            wait_until(lambda: len(records(state)) >= len(STEMS) // 2, client1, "half the tasks were recorded")
            client1.send_signal(signal.SIGKILL)
            client1.wait(30)
        finally:
            if client1.poll() is None:
                client1.kill()
            log1.close()
        first = records(state)
        assert len(first) < len(STEMS), "the first run finished before it was killed: nothing was resumed"

        # 3. a new machine joins; the same command again
        cluster.add_worker()
        cluster.wait_for_workers(2)
        proc = subprocess.run(cmd, cwd=_REPO_ROOT, env=env, capture_output=True, text=True, timeout=DEADLINE_S)
        out, err = proc.stdout, proc.stderr
        print(out, (tmp_path / "client1.log").read_text()[-2000:])
        assert proc.returncode == 0, out + err[-3000:]
        assert label_studio.token not in out + err + (tmp_path / "client1.log").read_text()
        assert f"project {pid}" in err  # the progress bar
        done_before = {r["task"] for r in first if r["status"] == "done"}
        m = re.search(r"predicted\s+(\d+)\n.*already done: (\d+) in the state file, (\d+) with a camcut-", out, re.S)
        assert m, out
        predicted, skipped_state, skipped_ls = map(int, m.groups())
        assert skipped_state == len(done_before) and predicted + skipped_state + skipped_ls == len(STEMS)
        assert "failed          0" in out
    finally:
        restore_workers(cluster)  # two live workers for any later test on the session's cluster

    # the killed worker's task was predicted again elsewhere
    last = {r["task"]: r for r in records(state)}
    rerun = [int(k.split("-")[2]) for k in keys]
    assert any(t in last and last[t]["worker"] != killed for t in rerun), (killed, keys, last)

    # every task: exactly one camcut prediction, with the engine's masks for that task
    from backend.config import Settings
    from backend.model import CamCutModel

    model = CamCutModel(Settings.from_env({**env, "MODEL_DIR": str(tmp_path / "oracle")}))
    for stem, tid in by_stem.items():
        preds = label_studio.list_predictions(tid)
        ours = [p for p in preds if str(p.get("model_version", "")).startswith("camcut-")]
        assert len(ours) == 1, f"task {tid} ({stem}): {len(ours)} camcut predictions"
        task = label_studio.get_task(tid)
        task["predictions"] = [p for p in preds if p.get("model_version") == "voc-boxes"]
        task["annotations"] = []
        [engine] = model.predict([task], str(pid), DEMO_LABEL_CONFIG, None)
        assert ours[0]["model_version"] == engine["model_version"]
        a, b = masks(ours[0]["result"]), masks(engine["result"])
        assert len(a) == len(b) > 0, stem
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)), f"task {tid} ({stem}): masks differ"
