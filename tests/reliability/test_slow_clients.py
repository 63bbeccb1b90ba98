"""Slow clients against the real server (gunicorn_conf.py starts the buffering front): partial
headers and partial bodies held open must not delay /health or a /predict, and are cut off by
the front's read timeouts. Run with CAMCUT_FRONT=0 to see today's gthread-only setup fail."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.reliability.conftest import CAT, LABEL_CONFIG, FaultServer, Gunicorn, box_task

HEADER_TIMEOUT = 8.0  # long enough for a CPU /predict under a loaded CI machine to finish inside it


@pytest.fixture
def server(tmp_path: Path, fault_server: FaultServer) -> Iterator[Gunicorn]:
    g = Gunicorn(
        {
            "WORKERS": "1",
            "THREADS": "4",
            "MODEL_DIR": str(tmp_path / "md"),
            "LABEL_STUDIO_URL": fault_server.url,
            "CAMCUT_HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "CAMCUT_BODY_TIMEOUT": str(HEADER_TIMEOUT),
            "CAMCUT_FRONT": os.environ.get("CAMCUT_FRONT", "1"),
        },
        tmp_path / "gunicorn.log",
    )
    try:
        g.wait_up()
        yield g
    finally:
        g.kill()


def _slow(port: int, partial: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(partial)
    return s


def test_slow_clients_do_not_stall_health_or_predict(server: Gunicorn, fault_server: FaultServer) -> None:
    port = server.port
    heads = [_slow(port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ") for _ in range(40)]
    bodies = [
        _slow(
            port, b'POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"tasks"'
        )
        for _ in range(40)
    ]
    t_opened = time.monotonic()
    latencies = []
    for _ in range(10):
        t0 = time.monotonic()
        assert requests.get(f"{server.url}/health", timeout=5).status_code == 200
        latencies.append(time.monotonic() - t0)
    t0 = time.monotonic()
    r = requests.post(
        f"{server.url}/predict",
        json={"tasks": [box_task(1, f"/data/upload/img/{CAT}.jpg")], "label_config": LABEL_CONFIG},
        timeout=HEADER_TIMEOUT,
    )
    predict_s = time.monotonic() - t0
    assert r.status_code == 200 and r.json()["results"][0]["result"], r.text[:300]
    assert time.monotonic() - t_opened < HEADER_TIMEOUT  # all of that while the 80 slow clients were still connected
    print(
        f"/health latency with 80 slow clients: max {max(latencies) * 1000:.1f} ms, median "
        f"{sorted(latencies)[5] * 1000:.1f} ms; /predict {predict_s:.2f} s"
    )
    assert max(latencies) < 1.0
    # the slow clients are cut off by the read timeouts: an answer (408) or EOF, not an open socket
    for s in heads + bodies:
        s.settimeout(HEADER_TIMEOUT * 3)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:100]
        s.close()
    assert time.monotonic() - t_opened < HEADER_TIMEOUT * 3


def test_whole_requests_still_work(server: Gunicorn) -> Any:
    with requests.Session() as s:  # keep-alive through the front, a big body, a HEAD
        for _ in range(3):
            assert s.get(f"{server.url}/health", timeout=5).json()["status"] == "UP"
        r = s.post(f"{server.url}/setup", data=b'{"schema": "' + b"x" * 2_000_000 + b'"}', timeout=30)
        assert r.status_code in (200, 400), r.text[:200]
        assert s.head(f"{server.url}/health", timeout=5).status_code == 200
