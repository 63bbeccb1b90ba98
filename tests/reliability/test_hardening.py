"""Hostile-input review, second round: a trickling image server (real sockets), LS API redirects,
deeply nested JSON, non-ASCII basic auth, forged log lines, huge URLs and heap addresses."""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from backend.config import ConfigError, Settings
from backend.fetch import FetchError, ImageFetcher
from backend.labelstudio import LabelStudioClient, LabelStudioError
from tests.reliability.conftest import LABEL_CONFIG, FaultServer

TOKEN = "legacy-token-0123456789abcdef"


class Trickle:
    """A loopback server sending one byte per ``gap`` seconds: of the headers (/headers) or of a
    200 000-byte body (/body) -- hours of transfer, far past any download timeout."""

    def __init__(self, gap: float = 0.2) -> None:
        self.stop = threading.Event()
        self.sent = 0
        trickle = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                head = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 200000\r\n\r\n"
                data = head + b"\xff" * 200_000 if self.path.endswith("/headers") else head
                if not self.path.endswith("/headers"):
                    self.wfile.write(head)
                    self.wfile.flush()
                    data = b"\xff" * 200_000
                try:
                    for i in range(len(data)):
                        if trickle.stop.wait(gap):  # the slowness is what is under test, not synchronisation
                            return
                        self.wfile.write(data[i : i + 1])
                        self.wfile.flush()
                        trickle.sent += 1
                except OSError:  # the client cut the connection: what the fix does
                    return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def trickle() -> Iterator[Trickle]:
    t = Trickle()
    yield t
    t.close()


# ------------------------------------------------------------------------------------ item 1
@pytest.mark.parametrize("phase", ["body", "headers"])
def test_trickling_download_ends_at_its_deadline(trickle: Trickle, phase: str) -> None:
    timeout = 1.0
    f = ImageFetcher(
        Settings.from_env(
            {"LABEL_STUDIO_URL": trickle.url, "LABEL_STUDIO_API_KEY": TOKEN, "CAMCUT_DOWNLOAD_TIMEOUT": str(timeout)}
        )
    )
    t0 = time.monotonic()
    with pytest.raises(FetchError, match="timed out after 1 s"):
        f.fetch(f"/data/upload/1/{phase}")
    took = time.monotonic() - t0
    # the trickle would need 200 000 x 0.2 s; per-byte socket timeouts never fire on it
    assert took < 3 * timeout, f"download held for {took:.1f} s with a {timeout} s deadline"
    assert trickle.sent > 0  # the server really was trickling when the deadline cut it


def test_trickling_download_answers_per_task_promptly(app_factory: Any, trickle: Trickle) -> None:
    client = app_factory(LABEL_STUDIO_URL=trickle.url, CAMCUT_DOWNLOAD_TIMEOUT="1").test_client()
    t0 = time.monotonic()
    r = client.post(
        "/predict", json={"tasks": [{"id": 1, "data": {"image": "/data/upload/1/body"}}], "label_config": LABEL_CONFIG}
    )
    assert r.status_code == 200 and "timed out" in r.get_json()["results"][0]["error"]
    assert time.monotonic() - t0 < 3.0


# ------------------------------------------------------------------------------------ item 9
def test_ls_api_redirect_off_label_studio_is_not_followed(fault_server: FaultServer, target_server: FaultServer) -> None:
    """GET /api/tasks/<id> answered by a redirect to another origin: neither followed nor keyed."""
    client = LabelStudioClient(fault_server.url, TOKEN, timeout=5)
    n = len(target_server.requests)
    for off in (
        f"{target_server.url}/img/x.jpg",
        f"http://localhost:{fault_server.port}/img/x.jpg",
        "http://169.254.169.254/latest/meta-data/",
    ):
        with pytest.raises(LabelStudioError, match="redirected off Label Studio"):
            client.get_json(f"/redirect?to={off}")
    assert len(target_server.requests) == n


def test_ls_api_redirect_on_label_studio_is_followed(fault_server: FaultServer) -> None:
    client = LabelStudioClient(fault_server.url, TOKEN, timeout=5)
    with pytest.raises(LabelStudioError, match="HTTP 404"):  # followed to LS's own (missing) path
        client.get_json("/redirect?to=/api/nothing")
    assert fault_server.requests[-1] == "/api/nothing"


# ------------------------------------------------------------------------------------ item 4
def test_deeply_nested_json_is_a_400(client: Any) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    for path in ("/predict", "/setup", "/webhook"):
        r = client.post(path, data=deep, content_type="application/json")
        assert r.status_code == 400 and "nested too deeply" in r.get_json()["error"], (path, r.get_data()[:300])


def _basic(user: str, pw: str, encoding: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{pw}".encode(encoding)).decode()}


def test_non_ascii_basic_auth_is_a_401(app_factory: Any) -> None:
    client = app_factory(BASIC_AUTH_USER="ls", BASIC_AUTH_PASS="s3cret-pass").test_client()
    for headers in (
        _basic("lś", "pässwörd", "utf-8"),
        _basic("lé", "pässwörd", "latin-1"),
        _basic("ls", "s3cret-pässß", "utf-8"),
        {"Authorization": "Basic \u00e9\u00e9=="},
        {"Authorization": "Basic !!!"},
        {"Authorization": "Basic " + "A" * 10_001},
    ):
        # /webhook is not behind basic auth (Label Studio sends none on webhooks; see test_webhook.py)
        for method, path in (("post", "/predict"), ("post", "/setup"), ("get", "/metrics")):
            r = getattr(client, method)(path, json={}, headers=headers)
            assert r.status_code == 401, (headers, path, r.status_code, r.get_data()[:300])
    assert client.get("/metrics", headers=_basic("ls", "s3cret-pass", "ascii")).status_code == 200


@pytest.mark.parametrize(
    "name, value",
    [("BASIC_AUTH_PASS", "pässwörd"), ("BASIC_AUTH_USER", "lś"), ("BASIC_AUTH_USER", "a:b"), ("BASIC_AUTH_PASS", "tab\there")],
)
def test_unusable_basic_auth_refused_at_config_time(name: str, value: str) -> None:
    env = {"BASIC_AUTH_USER": "ls", "BASIC_AUTH_PASS": "pw", name: value}
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)


# ------------------------------------------------------------------------------------ item 11
def test_crlf_and_huge_urls_are_escaped_and_cut(client: Any, caplog: pytest.LogCaptureFixture) -> None:
    forged = "http://evil.example/a.jpg\r\n2026-12-01 10:00:00,000 WARNING backend.app: FORGED admin login"
    huge = "http://evil.example/" + "A" * 2_000_000
    caplog.set_level(logging.INFO)
    r = client.post(
        "/predict",
        json={"tasks": [{"id": 1, "data": {"image": forged}}, {"id": 2, "data": {"image": huge}}], "label_config": LABEL_CONFIG},
    )
    assert r.status_code == 200
    errors = [t["error"] for t in r.get_json()["results"]]
    assert "\r" not in errors[0] and "\n" not in errors[0] and "FORGED" in errors[0]
    assert len(errors[1]) < 1000 and "chars)" in errors[1]
    assert len(r.get_data()) < 5000
    for rec in caplog.records:
        line = rec.getMessage()
        assert "\n" not in line and "\r" not in line and len(line) < 5000, line[:300]


def test_health_hides_model_dir_and_errors_hide_heap_addresses(app_factory: Any, tmp_path: Any) -> None:
    app = app_factory(MODEL_DIR=str(tmp_path / "secret-model-dir"))
    client = app.test_client()
    assert "secret-model-dir" not in client.get("/health").get_data(as_text=True)

    def boom(*a: Any) -> Any:
        raise RuntimeError(f"bad state {object()!r} in {threading.Lock()!r}")

    app.config["CAMCUT_MODEL"].setup = boom
    r = client.post("/setup", json={"project": "1.1", "schema": LABEL_CONFIG})
    msg = r.get_json()["error"]
    assert r.status_code == 500 and "bad state" in msg and re.search(r"0x[0-9a-f]{4}", msg) is None, msg
