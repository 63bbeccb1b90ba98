"""The resumable state of a bulk run: one JSON line per finished task, appended and fsynced."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any, Mapping

from .errors import UsageError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]


class StateFile:
    """Append-only JSON lines, one per finished task; exclusive lock while a run holds it."""

    def __init__(self, path: Path, project: int) -> None:
        self.path = Path(path)
        self.project = project
        self.fd: int | None = None

    def open(self) -> "StateFile":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise UsageError(f"state file {self.path} is in use by another bulk run of this project") from None
                raise
        self.fd = fd
        size = os.fstat(fd).st_size
        if size:
            os.lseek(fd, size - 1, os.SEEK_SET)
            if os.read(fd, 1) != b"\n":  # torn last line: start the next record on a line of its own
                os.write(fd, b"\n")
                os.fsync(fd)
        if created:  # the new directory entry must survive a crash too
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return self

    def records(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # torn or garbled line
            if isinstance(rec, dict) and rec.get("project") == self.project and isinstance(rec.get("task"), int):
                out.append(rec)
        return out

    def done(self, model_version: str) -> set[int]:
        """Tasks whose latest record is ``done`` with ``model_version``."""
        last: dict[int, dict[str, Any]] = {}
        for rec in self.records():
            last[rec["task"]] = rec
        return {t for t, r in last.items() if r.get("status") == "done" and r.get("model_version") == model_version}

    def append(self, record: Mapping[str, Any]) -> None:
        assert self.fd is not None, "state file not open"
        line = (json.dumps({"project": self.project, **record}, separators=(",", ":"), default=str) + "\n").encode()
        os.write(self.fd, line)  # one write on O_APPEND: never interleaved, at worst torn by a crash
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None
