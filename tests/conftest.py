"""Session fixtures shared by every test directory: started once per ``pytest`` run, not once per
directory or module (each costs seconds on 2 loaded cores; none keeps state between tests that a
test reads back).

``postgres``      a real PostgreSQL server on loopback (tests/pgserver.py): every test that uses
                  it takes a fresh database of its own (``create_database``), so tests never see
                  each other's rows. tests/backend and tests/reliability used to start one each.
``camnet``        the CNN (read-only weights; a forward pass keeps no state).
``dask_cluster``  a real Dask scheduler and two workers on loopback (bench/cluster.py) for the
                  cluster tests of tests/backend and tests/e2e. A test that kills a worker has new
                  ones join and waits for two before it returns (``restore_workers``), so the next
                  test starts on two live workers, as on a fresh cluster; a bulk run's workers
                  load one model per run's settings (backend/bulk/cluster.py ``plugin_name``), so
                  runs against different Label Studios do not share a model.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.cluster import LocalDaskCluster  # noqa: E402
from model import CamNet  # noqa: E402
from tests.pgserver import PostgresServer  # noqa: E402

DASK_WORKERS = 2


@pytest.fixture(scope="session")
def camnet() -> CamNet:
    return CamNet()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on loopback for the session (tests/pgserver.py)."""
    s = PostgresServer()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDaskCluster]:
    with LocalDaskCluster(workers=DASK_WORKERS, log_dir=tmp_path_factory.mktemp("dask")) as c:
        yield c


def restore_workers(cluster: LocalDaskCluster) -> None:
    """After a test killed workers: new ones join until the cluster has its two workers again
    (counted from the processes it started, not from the scheduler, which may not have noticed
    a death yet)."""
    for _ in range(DASK_WORKERS - (len(cluster.workers) - len(cluster.killed))):
        cluster.add_worker()
    cluster.wait_for_workers(DASK_WORKERS)
