"""Fixtures for the reliability tests: a fault-injecting fake Label Studio on 127.0.0.1, a
loopback-only network guard, hostile image files and a gunicorn launcher.

``FaultServer`` routes (every request is recorded in ``.requests``):
  /img/<stem>.jpg          a real VOC JPEG (no auth)
  /file/<name>             bytes registered in ``.files`` (hostile images)
  /status/<code>           answers that HTTP status
  /slow?s=<seconds>        sleeps, then sends an image (longer than the download timeout)
  /cut                     declares Content-Length 200000, sends 1000 bytes, closes
  /redirect?to=<url>       302 -> url
Each route also answers under ``/data/upload/`` (the path the backend accepts on LS's host).
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from tests.backend.conftest import (  # noqa: F401  (fixtures re-exported)
    LABEL_CONFIG,
    ROOT,
    app_factory,
    client,
    database_url,
    image_size,
    jpeg,
    ls_server,
    rect,
    settings_factory,
    voc_boxes,
)

CAT = "2007_000528"
DOG = "2007_000063"


class FaultServer:
    def __init__(self) -> None:
        self.requests: list[str] = []
        self.files: dict[str, bytes] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _send(
                self, code: int, body: bytes = b"", ctype: str = "application/octet-stream", headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def do_GET(self) -> None:
                fake.requests.append(self.path)
                # the backend fetches only LS image paths from LS's host: the fault routes also answer under /data/upload/
                u = urlsplit(self.path.removeprefix("/data/upload"))
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                if u.path.startswith("/img/"):
                    p = jpeg(Path(u.path).stem)
                    return self._send(200, p.read_bytes(), "image/jpeg") if p.is_file() else self._send(404, b"no")
                if u.path.startswith("/file/"):
                    name = u.path[len("/file/") :]
                    return self._send(200, fake.files[name]) if name in fake.files else self._send(404, b"no")
                if u.path.startswith("/status/"):
                    return self._send(int(u.path.rsplit("/", 1)[1]), b'{"detail": "nope"}', "application/json")
                if u.path == "/slow":
                    time.sleep(float(q.get("s", "3")))  # the behaviour under test: a server slower than the timeout
                    try:
                        return self._send(200, jpeg(CAT).read_bytes(), "image/jpeg")
                    except OSError:
                        return None
                if u.path == "/cut":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/jpeg")
                    self.send_header("Content-Length", "200000")
                    self.end_headers()
                    self.wfile.write(jpeg(CAT).read_bytes()[:1000])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return None
                if u.path == "/redirect":
                    return self._send(302, headers={"Location": q["to"]})
                if u.path.startswith("/data/local-files/"):
                    return self._send(200, jpeg(CAT).read_bytes(), "image/jpeg")
                self._send(404, b"missing")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def fault_server() -> Iterator[FaultServer]:
    s = FaultServer()
    yield s
    s.close()


@pytest.fixture(scope="session")
def target_server() -> Iterator[FaultServer]:
    """A second loopback server that must never be contacted (SSRF target)."""
    s = FaultServer()
    yield s
    s.close()


def _loopback(host: Any) -> bool:
    if host in ("localhost", "127.0.0.1", "::1", "", None):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Refuse (and record) every in-process attempt to resolve or connect to a non-loopback address."""
    attempts: list[Any] = []
    real_connect, real_connect_ex, real_gai = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            attempts.append(("connect", address))
            raise OSError(f"test guard: connection to non-loopback {address!r} refused")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not _loopback(address[0]):
            attempts.append(("connect", address))
            raise OSError(f"test guard: connection to non-loopback {address!r} refused")
        return real_connect_ex(self, address)

    def getaddrinfo(host: Any, *a: Any, **kw: Any) -> Any:
        h = host.decode() if isinstance(host, bytes) else host
        if not _loopback(h):
            attempts.append(("resolve", h))
            raise socket.gaierror(socket.EAI_NONAME, f"test guard: no resolving {h!r}")
        return real_gai(host, *a, **kw)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


def box_task(task_id: int, image: str, stem: str = CAT) -> dict[str, Any]:
    """A task whose first VOC box is given as a prediction: fast, deterministic box mode."""
    w, h = image_size(stem)
    label, box = voc_boxes(stem)[0]
    label = {"cat": "Cat", "person": "people"}.get(label, label)
    return {"id": task_id, "data": {"image": image}, "predictions": [{"result": [rect(label, box, w, h)]}]}


def pct_box_task(
    task_id: int, image: str, label: str = "Cat", box: tuple[float, float, float, float] = (10, 10, 80, 80)
) -> dict[str, Any]:
    """A task with one percent box (image size unknown in advance)."""
    x0, y0, x1, y1 = box
    r = {
        "id": "r1",
        "type": "rectanglelabels",
        "from_name": "box",
        "to_name": "image",
        "value": {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0, "rotation": 0, "rectanglelabels": [label]},
    }
    return {"id": task_id, "data": {"image": image}, "predictions": [{"result": [r]}]}


# ------------------------------------------------------------------------------------ gunicorn
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """``gunicorn --config backend/gunicorn_conf.py backend.wsgi:app`` on 127.0.0.1, own process group."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full = {k: v for k, v in os.environ.items() if not k.startswith(("CAMCUT_", "LABEL_STUDIO_", "BASIC_AUTH_"))}
        full.update({"PORT": str(self.port), "LOG_LEVEL": "WARNING", "NO_PROXY": "*", **env})
        self.log = open(log_path, "wb")  # noqa: SIM115  # gunicorn's log, closed in kill()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--config",
                "backend/gunicorn_conf.py",
                "-b",
                f"127.0.0.1:{self.port}",
                "backend.wsgi:app",
            ],
            cwd=ROOT,
            env=full,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_up(self, timeout: float = 180.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}: {Path(self.log.name).read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)  # poll interval of the deadline-bounded readiness check above
        raise RuntimeError("gunicorn did not come up")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)  # the process group of the gunicorn we started (master + workers)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.log.close()
