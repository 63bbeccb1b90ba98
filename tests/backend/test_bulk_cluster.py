"""``camcut bulk --scheduler tcp://...`` on a real Dask cluster on loopback (a ``dask scheduler``
process and two ``dask worker`` processes over TCP, as on two hosts) against the fake Label Studio
of test_bulk.py, which counts every prediction POST per task.

The e2e version (real Label Studio 1.23.2, a worker SIGKILLed mid-run, the client SIGKILLed and
resumed) is tests/e2e/test_bulk_cluster_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle

from backend import bulk
from backend.bulk.pace import RateLimit
from backend.config import Settings
from backend.model import CamCutModel
from bench.cluster import LocalDaskCluster, free_port
from tests.backend import test_bulk
from tests.backend.conftest import LABEL_CONFIG, TOKEN
from tests.backend.test_bulk import PROJECT, STEMS, FakeLS, box_task, run, state_lines
from tests.conftest import restore_workers

# test_bulk.py's fixtures: the fake LS with 4 VOC box tasks and a bad one (99), its env, the client's model
fake_ls, env, model = test_bulk.fake_ls, test_bulk.env, test_bulk.model

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(dask_cluster: LocalDaskCluster) -> LocalDaskCluster:
    """The session's cluster (tests/conftest.py; the e2e cluster test uses it too): two workers."""
    return dask_cluster


def masks(result: list[dict[str, Any]]) -> list[np.ndarray]:
    out = []
    for r in result:
        w, h = r["original_width"], r["original_height"]
        out.append(np.asarray(decode_rle(r["value"]["rle"])).reshape(h, w, 4)[:, :, 3] > 0)
    return out


def test_cluster_run_predicts_each_task_once_with_the_engines_masks(
    cluster: LocalDaskCluster, fake_ls: FakeLS, env: dict[str, str], model: CamCutModel, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(env, "--scheduler", cluster.address, model=model)
    out, err = capsys.readouterr()
    assert code == bulk.EXIT_FAILED, out + err  # task 99 (missing image) failed, the others went on
    assert "predicted       4" in out and "failed          1" in out and "on the Dask cluster" in out
    assert "failed task 99: Label Studio refused the image (HTTP 4xx)" in out
    assert TOKEN not in out + err
    good = [t for t in fake_ls.tasks if t != 99]
    assert fake_ls.posts == {t: 1 for t in good}
    with cluster.client() as c:
        workers = set(c.scheduler_info(n_workers=-1)["workers"])
    recs = state_lines(env)
    assert {r["worker"] for r in recs} <= workers and all(r.get("worker") for r in recs)
    # the masks the workers made are the engine's: predict the same tasks in this process
    for tid in good:
        [ours] = fake_ls.ours(tid)
        task = {**fake_ls.tasks[tid], "predictions": [p for p in fake_ls.tasks[tid]["predictions"] if p is not ours]}
        [local] = model.predict([task], str(PROJECT), LABEL_CONFIG, None)
        assert ours["model_version"] == local["model_version"]
        a, b = masks(ours["result"]), masks(local["result"])
        assert len(a) == len(b) > 0 and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_one_in_flight_and_one_connection_is_one_task_at_a_time_towards_label_studio(
    cluster: LocalDaskCluster, fake_ls: FakeLS, env: dict[str, str], model: CamCutModel
) -> None:
    del fake_ls.tasks[99]
    code = run(env, "--scheduler", cluster.address, "--max-inflight", "1", "--ls-connections", "1", model=model)
    assert code == bulk.EXIT_OK
    stem_of = {t: fake_ls.tasks[t]["data"]["image"].rsplit("/", 1)[1][:-4] for t in fake_ls.tasks}
    # with one task in flight, each image download is followed by that task's post before the next download
    expect: list[tuple[str, Any]] = []
    for kind, what in fake_ls.log:
        if kind == "post":
            expect += [("image", stem_of[what]), ("post", what)]
    assert fake_ls.log == expect and len(expect) == 2 * len(STEMS)


def test_a_worker_killed_mid_run_loses_nothing_and_writes_nothing_twice(
    cluster: LocalDaskCluster, tmp_path: Path, camnet: Any
) -> None:
    tasks = [box_task(10 + i, STEMS[i % len(STEMS)]) for i in range(8)]
    fake = FakeLS(tasks)
    env8 = {"LABEL_STUDIO_URL": fake.url, "LABEL_STUDIO_API_KEY": TOKEN, "MODEL_DIR": str(tmp_path / "m")}
    model8 = CamCutModel(Settings.from_env(env8), net=camnet)
    killed: dict[str, Any] = {}

    def kill_a_busy_worker(o: bulk.Outcome) -> None:
        if killed:
            return
        with cluster.client() as c:  # synchronised on progress: one task recorded, others running
            info = c.scheduler_info(n_workers=-1)["workers"]
            busy = {a: ks for a, ks in c.processing().items() if ks}
        addr = next(iter(busy))
        killed.update(address=addr, keys=busy[addr])
        cluster.kill_worker(int(info[addr]["name"][1:]))

    try:
        code = run(env8, "--scheduler", cluster.address, model=model8, on_outcome=kill_a_busy_worker)
        assert code == bulk.EXIT_OK
        assert fake.posts == {t["id"]: 1 for t in tasks}, "a task was lost or predicted twice"
        recs = {r["task"]: r for r in state_lines(env8)}
        assert set(recs) == {t["id"] for t in tasks} and all(r["status"] == "done" for r in recs.values())
        rerun = [int(k.split("-")[2]) for k in killed["keys"]]
        # the tasks the dead worker held were predicted again elsewhere (at least the one it was running)
        assert any(recs[t]["worker"] != killed["address"] for t in rerun), (killed, recs)
    finally:
        fake.close()
        restore_workers(cluster)  # the session's cluster has two workers again for the other tests


def test_unreachable_scheduler_is_a_usage_error(
    env: dict[str, str], model: CamCutModel, capsys: pytest.CaptureFixture[str]
) -> None:
    addr = f"tcp://127.0.0.1:{free_port()}"
    assert run(env, "--scheduler", addr, "--cluster-timeout", "2", model=model) == bulk.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"cannot reach the Dask scheduler at {addr}" in err and TOKEN not in err


def test_rate_limit_spaces_starts() -> None:
    now = [100.0]
    lim = RateLimit(4.0, clock=lambda: now[0])
    assert lim.delay() == 0
    lim.take()
    assert lim.delay() == pytest.approx(0.25)
    now[0] += 0.25
    assert lim.delay() == 0
    lim.take()
    now[0] += 10  # idle time does not build a burst
    lim.take()
    assert lim.delay() == pytest.approx(0.25)
    assert RateLimit(0).delay() == 0


def test_state_record_carries_the_worker() -> None:
    rec = bulk.Outcome(5, status="done", worker="tcp://127.0.0.1:1").record()
    assert json.loads(json.dumps(rec))["worker"] == "tcp://127.0.0.1:1"
    assert "worker" not in bulk.Outcome(5).record()
