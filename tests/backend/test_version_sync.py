"""Issue 13 item 1: LS's project model_version is kept equal to camcut's version, so the Data
Manager's score column (which averages predictions of project.model_version only) is filled."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from backend.labelstudio import LabelStudioClient
from backend.version_sync import VersionSync
from tests.backend.conftest import TOKEN


class FakeProjectApi:
    """GET/PATCH /api/projects/7/ and GET /api/ml/?project=7, as LS 1.23 answers them."""

    def __init__(self) -> None:
        self.model_version = "camcut"  # what Connect model sets: the backend's title
        self.patches: list[Any] = []
        self.refuse = 0  # PATCHes refused as LS refuses a version it has no prediction of yet
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _json(self, obj: Any, code: int = 200) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.headers.get("Authorization") != f"Token {TOKEN}":
                    return self._json({"detail": "no"}, 401)
                if self.path.startswith("/api/projects/7"):
                    return self._json({"id": 7, "model_version": fake.model_version})
                if self.path.startswith("/api/ml/"):
                    return self._json([{"id": 1, "title": "camcut", "model_version": "camcut-default-x"}])
                self._json({}, 404)

            def do_PATCH(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                fake.patches.append(body)
                if fake.refuse > 0:
                    fake.refuse -= 1
                    msg = "Model version doesn't exist either as live model or as static predictions."
                    return self._json({"detail": "Validation error", "validation_errors": {"model_version": [msg]}}, 400)
                fake.model_version = body["model_version"]
                self._json({"id": 7, "model_version": fake.model_version})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def api() -> Iterator[FakeProjectApi]:
    a = FakeProjectApi()
    yield a
    a.httpd.shutdown()
    a.httpd.server_close()


def test_title_then_new_version_are_replaced(api: FakeProjectApi) -> None:
    sync = VersionSync(LabelStudioClient(api.url, TOKEN))
    t = sync.schedule("7", "camcut-default-aaa")
    assert t is not None
    t.join(10)
    assert api.model_version == "camcut-default-aaa"
    assert sync.schedule("7", "camcut-default-aaa") is None  # known: no request
    t = sync.schedule("7", "camcut-default-bbb")  # corrections changed the version
    assert t is not None
    t.join(10)
    assert api.model_version == "camcut-default-bbb" and len(api.patches) == 2


def test_a_patch_before_ls_stored_the_predictions_is_retried(api: FakeProjectApi, monkeypatch: Any) -> None:
    """LS stores a batch's predictions after camcut answered, and refuses (400) a model_version
    it has no prediction of: the PATCH that follows the answer could come first and was lost."""
    import backend.version_sync as vs

    monkeypatch.setattr(vs, "RETRY_WAITS_S", (0.01, 0.01, 0.01))
    api.refuse = 2
    t = VersionSync(LabelStudioClient(api.url, TOKEN)).schedule("7", "camcut-default-aaa")
    assert t is not None
    t.join(10)
    assert api.model_version == "camcut-default-aaa" and len(api.patches) == 3


def test_a_version_chosen_by_hand_is_left_alone(api: FakeProjectApi) -> None:
    api.model_version = "yolo-v8-import"
    sync = VersionSync(LabelStudioClient(api.url, TOKEN))
    assert sync.sync(7, "camcut-default-aaa") is False
    assert api.model_version == "yolo-v8-import" and not api.patches


def test_no_key_or_no_project_id_does_nothing(api: FakeProjectApi) -> None:
    assert VersionSync(LabelStudioClient(api.url, "")).schedule("7", "v") is None
    assert VersionSync(LabelStudioClient(api.url, TOKEN)).schedule("", "v") is None


def test_predict_schedules_the_sync(app_factory: Any, api: FakeProjectApi, monkeypatch: Any) -> None:
    """A /predict (not interactive) for project 7 leads to LS's model_version = the answer's."""
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(VersionSync, "schedule", lambda self, p, v: seen.append((p, v)))
    client = app_factory().test_client()
    config = (
        '<View><Image name="image" value="$image"/><BrushLabels name="m" toName="image"><Label value="dog"/></BrushLabels></View>'
    )
    body = {"tasks": [{"id": 1, "data": {"image": "/data/upload/1/no_such.jpg"}}], "project": "7.123", "label_config": config}
    r = client.post("/predict", json=body)
    assert r.status_code == 200 and seen == [("7", r.get_json()["results"][0]["model_version"])]
