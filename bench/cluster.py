"""A real Dask cluster on loopback, started as a user starts one on several hosts: one
``dask scheduler`` process and N ``dask worker tcp://...`` processes (each under its nanny,
``--nthreads 1``, in a session of its own so that it can be killed whole, like a machine).

Used by bench/clusterbench.py and by the cluster tests (tests/backend/test_bulk_cluster.py,
tests/e2e/test_bulk_cluster_e2e.py).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dask_command() -> list[str]:
    exe = Path(sys.executable).parent / "dask"  # the console script distributed installs
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "dask"]


class LocalDaskCluster:
    """``with LocalDaskCluster(workers=2, log_dir=...) as c:`` ... ``c.address`` ... ``c.kill_worker(i)``."""

    def __init__(self, workers: int = 2, log_dir: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.n = workers
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.log_dir = Path(log_dir or REPO / "out" / "dask")
        # the workers import backend.bulk.cluster by name (the task function is pickled by reference)
        self.env = {**(env if env is not None else os.environ), "PYTHONPATH": str(REPO)}
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.killed: set[int] = set()
        self._logs: list[IO[bytes]] = []

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / log_name, "wb")  # noqa: SIM115  # closed in stop()
        self._logs.append(log)
        return subprocess.Popen(
            [*dask_command(), *args],
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self, timeout: float = 120.0) -> LocalDaskCluster:
        self.scheduler = self._spawn(
            ["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"], "scheduler.log"
        )
        for _ in range(self.n):
            self.add_worker()
        self.wait_for_workers(self.n, timeout)
        return self

    def add_worker(self) -> subprocess.Popen:
        i = len(self.workers)
        w = self._spawn(
            ["worker", self.address, "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}"],
            f"worker-{i}.log",
        )
        self.workers.append(w)
        return w

    def client(self) -> Any:
        from distributed import Client

        return Client(self.address, timeout=30, set_as_default=False)

    def wait_for_workers(self, n: int, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with self.client() as c:
            while len(c.scheduler_info(n_workers=-1)["workers"]) < n:
                alive = [p for i, p in enumerate(self.workers) if i not in self.killed]
                dead = [p for p in [self.scheduler, *alive] if p is not None and p.poll() is not None]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(f"Dask cluster not up ({len(dead)} process(es) exited); logs in {self.log_dir}")
                time.sleep(0.2)  # poll interval of the deadline-bounded readiness check

    def kill_worker(self, i: int) -> None:
        """SIGKILL worker ``i`` and its nanny: the machine is gone, nothing gets to clean up."""
        self.killed.add(i)
        os.killpg(self.workers[i].pid, signal.SIGKILL)
        self.workers[i].wait(30)

    def stop(self) -> None:
        for p in [*self.workers, self.scheduler]:
            if p is not None and p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in [*self.workers, self.scheduler]:
            if p is None:
                continue
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self) -> LocalDaskCluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
