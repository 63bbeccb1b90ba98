"""backend/gunicorn_conf.py's post_fork sets glibc's malloc up in each worker: two arenas and a
fixed mmap threshold (README "Speed": the featcut worker's peak RSS), each unless the
environment already sets it (glibc reads MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_ itself)."""

from __future__ import annotations

import ctypes
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

CONF = Path(__file__).resolve().parents[2] / "backend" / "gunicorn_conf.py"
M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # glibc's malloc.h


def load_conf() -> ModuleType:
    spec = importlib.util.spec_from_file_location("camcut_gunicorn_conf_under_test", CONF)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class FakeLibc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


@pytest.fixture
def libc(monkeypatch: pytest.MonkeyPatch) -> FakeLibc:
    fake = FakeLibc()
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: fake)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    return fake


def post_fork() -> Any:
    conf = load_conf()
    conf.post_fork(None, None)
    return conf


def test_post_fork_caps_arenas_and_fixes_the_mmap_threshold(libc: FakeLibc) -> None:
    conf = post_fork()
    assert sorted(libc.calls) == sorted([(M_ARENA_MAX, 2), (M_MMAP_THRESHOLD, conf.MMAP_THRESHOLD)])
    assert 128 * 1024 <= conf.MMAP_THRESHOLD < 32 * 1024 * 1024  # glibc's default start and its dynamic ceiling


def test_the_environment_wins(libc: FakeLibc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "4194304")
    post_fork()
    assert libc.calls == [(M_ARENA_MAX, 2)]
    libc.calls.clear()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    post_fork()
    assert libc.calls == []


def test_post_fork_turns_onednn_primitive_cache_off_unless_the_environment_sets_it(
    libc: FakeLibc, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    monkeypatch.delenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", raising=False)  # restored after the test
    conf = post_fork()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == conf.ONEDNN_CACHE_CAPACITY == "0"
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "256")
    post_fork()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "256"
