"""The personal access token's refresh never follows a redirect (issue 11, item 9).

The refresh is a POST whose body is the refresh token itself (the PAT). requests re-sends a
POST body on a 307/308 redirect, to any origin (it strips only the Authorization header), so a
followed redirect would hand the long-lived PAT to whoever the Location names. Real sockets: a
loopback "Label Studio" that answers the refresh with a redirect, and a second loopback server
on another port that records every body it receives.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from backend.labelstudio import LabelStudioAuthError, LabelStudioClient


def _seg(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


# looks_like_jwt() is all that makes the client treat the key as a PAT (and refresh it)
PAT = f"{_seg({'alg': 'HS256', 'typ': 'JWT'})}.{_seg({'token_type': 'refresh', 'jti': 'x1'})}.c2lnbmF0dXJl"


class Recorder:
    """A loopback HTTP server recording (path, body) of every request; answers with ``answer``."""

    def __init__(self, answer: Any) -> None:
        self.posts: list[tuple[str, bytes]] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                rec.posts.append((self.path, body))
                status, headers, data = answer(rec, self.path)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST  # a 302/303 turns the POST into a GET: recorded all the same

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _access() -> bytes:
    tok = f"{_seg({'alg': 'HS256'})}.{_seg({'token_type': 'access', 'exp': 4102444800})}.c2ln"
    return json.dumps({"access": tok}).encode()


@pytest.fixture
def capture() -> Iterator[Recorder]:
    """The other origin: would happily answer a refresh with an access token."""
    r = Recorder(lambda rec, path: (200, {"Content-Type": "application/json"}, _access()))
    yield r
    r.close()


@pytest.mark.parametrize("status", [307, 308, 302])
def test_refresh_redirect_never_carries_the_token_off_label_studio(capture: Recorder, status: int) -> None:
    ls = Recorder(lambda rec, path: (status, {"Location": f"{capture.url}/api/token/refresh/"}, b""))
    try:
        client = LabelStudioClient(ls.url, PAT, timeout=5)
        refused: LabelStudioAuthError | None = None
        try:
            client.auth_headers()
        except LabelStudioAuthError as exc:
            refused = exc
        # the other origin got nothing at all, so not the PAT
        assert capture.posts == []
        assert [p for p, _ in ls.posts] == ["/api/token/refresh/"]  # the refresh was tried on LS
        assert PAT.encode() in ls.posts[0][1]
        assert refused is not None and f"HTTP {status}" in str(refused) and refused.status == 401
    finally:
        ls.close()


def test_refresh_on_label_studio_gives_a_bearer(capture: Recorder) -> None:
    """The same client against a server that answers the refresh: the test's servers work."""
    client = LabelStudioClient(capture.url, PAT, timeout=5)
    assert client.auth_headers()["Authorization"].startswith("Bearer ")
    assert capture.posts and PAT.encode() in capture.posts[0][1]
