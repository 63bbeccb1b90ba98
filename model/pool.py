"""The process-wide thread pools that run a call's cuts concurrently, and the cores they may use."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

_T = TypeVar("_T")
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cut_pool(threads: int) -> ThreadPoolExecutor:
    """One process-wide pool per size, created on first use (so after a fork, never before)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="camcut-cut")
        return pool


def run_jobs(jobs: Sequence[Callable[[], _T]], threads: int) -> list[_T | Exception]:
    """Run jobs (in the pool when threads > 1); a job's exception is returned in its place."""

    def guarded(job: Callable[[], _T]) -> _T | Exception:
        try:
            return job()
        except Exception as exc:  # handed back to the caller, who decides per prompt
            return exc

    if threads <= 1 or len(jobs) <= 1:
        return [guarded(j) for j in jobs]
    return list(cut_pool(threads).map(guarded, jobs))
