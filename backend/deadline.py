"""A wall-clock limit for one whole HTTP download, redirects included, whatever the server does.

requests' timeout is per socket operation and restarts with every byte received: a server
trickling one byte per second holds a download (and its batch slot) for as long as it likes.
A watchdog timer shuts the connection's socket down at the deadline instead; a shut-down socket
makes the blocked recv() return at once, whatever phase (headers, body, TLS) it is in.
"""

from __future__ import annotations

import socket
import threading
import time

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_WATCH = threading.local()


class Deadline:
    """Wall-clock limit of one whole download; sockets opened in this thread are registered with it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def add(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)
            if self.expired.is_set():
                _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.expired.set()
            for sock in self._socks:
                _shutdown(sock)

    def __enter__(self) -> Deadline:
        _WATCH.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _WATCH.deadline = None


def _shutdown(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


class _WatchedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        deadline = getattr(_WATCH, "deadline", None)
        if deadline is not None:
            deadline.add(sock)
        return sock


class _WatchedHTTPSConnection(HTTPSConnection, _WatchedHTTPConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


def deadline_session() -> requests.Session:
    """A session whose connections a :class:`Deadline` can cut; no pooling across downloads,
    so every hop opens (and registers) its own socket."""
    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0)
    adapter.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
