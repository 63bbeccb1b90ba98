"""Fixtures for the backend tests: a fake Label Studio on 127.0.0.1 serving real VOC JPEGs, the
store's engine and an app factory (the session's CamNet and PostgreSQL server: tests/conftest.py).

The fake LS (``ls_server``) answers what a backend asks LS for:
  /data/upload/<stem>.jpg            VOC image, needs ``Authorization: Token <KEY>`` or a Bearer access token
  /data/local-files/?d=<rel path>    VOC image by relative path, same auth
  /img/<stem>.jpg                    VOC image, no auth (an "allow-listed" plain URL)
  /tasks/<id>/presign/?fileuri=b64   302 -> /img/<key of the s3 URI>
  /api/tasks/<id>, /api/predictions/ JSON from ``ls_server.tasks``
  /api/annotations/<id>/, /api/projects/<id>/  JSON from ``.annotations`` / ``.projects`` (404 if absent)
  PATCH /api/projects/<id>/          updates a known project (camcut keeps its model_version in step)
  /api/token/refresh/                {"refresh": PAT} -> {"access": <jwt>}
  /redirect?to=<url>                 302 -> url
  /big, /text, /missing              a too-big body, a non-image, a 404
  /data/upload/{redirect,big,text}   the same (the backend fetches only LS image paths from LS's host)
Every request's path and headers are recorded in ``ls_server.requests``.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from backend.config import Settings  # noqa: E402
from model import CamNet  # noqa: E402
from tests.pgserver import PostgresServer  # noqa: E402

VOC = Path(__file__).resolve().parents[3] / "shared" / "voc2012" / "VOC2012"  # ../shared beside the repo
TOKEN = "legacy-token-0123456789abcdef"
ACCESS_PREFIX = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"


def b64(obj: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def make_jwt(payload: dict[str, Any]) -> str:
    return f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(payload)}.c2lnbmF0dXJl"


PAT = make_jwt({"token_type": "refresh", "exp": 4102444800, "jti": "pat"})
ACCESS = make_jwt({"token_type": "access", "exp": int(time.time()) + 3600, "jti": "acc"})

LABEL_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="box" toName="image"><Label value="dog"/><Label value="Cat"/><Label value="people"/><Label value="chair"/><Label value="widget"/></RectangleLabels>
  <KeyPointLabels name="kp" toName="image"><Label value="dog"/><Label value="Cat"/></KeyPointLabels>
  <BrushLabels name="mask" toName="image"><Label value="dog"/><Label value="Cat"/><Label value="people"/><Label value="chair"/><Label value="widget"/></BrushLabels>
  <Choices name="tags" toName="image" choice="multiple"><Choice value="dog"/><Choice value="Cat"/><Choice value="widget"/></Choices>
</View>"""


def jpeg(stem: str) -> Path:
    return VOC / "JPEGImages" / f"{stem}.jpg"


def image_size(stem: str) -> tuple[int, int]:
    with Image.open(jpeg(stem)) as im:
        return im.size


def instance_masks(stem: str) -> list[tuple[str, np.ndarray]]:
    """(VOC class, bool mask) of every instance of a VOC segmentation image."""
    from model import VOC_CLASSES

    obj = np.array(Image.open(VOC / "SegmentationObject" / f"{stem}.png"))
    cls = np.array(Image.open(VOC / "SegmentationClass" / f"{stem}.png"))
    out = []
    for i in np.unique(obj):
        if i in (0, 255):
            continue
        m = obj == i
        out.append((VOC_CLASSES[int(np.bincount(cls[m]).argmax()) - 1], m))
    return out


def voc_boxes(stem: str) -> list[tuple[str, tuple[float, float, float, float]]]:
    """(name, pixel box half-open) from the VOC XML."""
    root = ET.parse(VOC / "Annotations" / f"{stem}.xml").getroot()
    out = []
    for o in root.findall("object"):
        bb = o.find("bndbox")
        x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        out.append((o.findtext("name"), (x0 - 1, y0 - 1, x1, y1)))
    return out


def rect(
    label: str, box: tuple[float, float, float, float], w: int, h: int, rid: str = "r1", from_name: str = "box"
) -> dict[str, Any]:
    x0, y0, x1, y1 = box
    return {
        "id": rid,
        "type": "rectanglelabels",
        "from_name": from_name,
        "to_name": "image",
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {
            "x": 100 * x0 / w,
            "y": 100 * y0 / h,
            "width": 100 * (x1 - x0) / w,
            "height": 100 * (y1 - y0) / h,
            "rotation": 0,
            "rectanglelabels": [label],
        },
    }


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 1.0


PROJECT_IDS = (1, 3, 5, 7)  # the projects of the backend tests' /predict and /setup calls


class FakeLabelStudio:
    def __init__(self) -> None:
        self.tasks: dict[int, dict[str, Any]] = {}
        self.annotations: dict[int, dict[str, Any]] = {}
        # LS sends /predict only for projects it has: the ids the tests predict for exist
        self.projects: dict[int, dict[str, Any]] = {
            pid: {"id": pid, "title": f"project {pid}", "model_version": ""} for pid in PROJECT_IDS
        }
        self.requests: list[tuple[str, dict[str, str]]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _send(
                self, code: int, body: bytes = b"", ctype: str = "application/json", headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _authed(self) -> bool:
                a = self.headers.get("Authorization", "")
                return a in (f"Token {TOKEN}", f"Bearer {ACCESS}")

            def _image(self, stem: str, auth: bool) -> None:
                if auth and not self._authed():
                    return self._send(401, b'{"detail":"auth"}')
                p = jpeg(stem)
                if not p.is_file():
                    return self._send(404, b"not found", "text/plain")
                self._send(200, p.read_bytes(), "image/jpeg")

            def do_GET(self) -> None:
                fake.requests.append((self.path, dict(self.headers)))
                u = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                if u.path in ("/data/upload/redirect", "/data/upload/big", "/data/upload/text"):
                    u = urlsplit(self.path.removeprefix("/data/upload"))  # fault routes under LS's image path
                if u.path.startswith("/data/upload/"):
                    return self._image(Path(u.path).stem, True)
                if u.path == "/data/local-files/":
                    return self._image(Path(q.get("d", "")).stem, True)
                if u.path.startswith("/img/"):
                    return self._image(Path(u.path).stem, False)
                if u.path.startswith("/tasks/") and u.path.endswith("/presign/"):
                    if not self._authed():
                        return self._send(401)
                    uri = base64.urlsafe_b64decode(q["fileuri"]).decode()
                    return self._send(302, headers={"Location": f"/data/upload/img/{Path(uri).name}"})
                if u.path.startswith("/api/tasks/"):
                    if not self._authed():
                        return self._send(401)
                    t = fake.tasks.get(int(u.path.rstrip("/").rsplit("/", 1)[1]))
                    return self._send(200 if t else 404, json.dumps(t or {}).encode())
                for prefix, table in (("/api/annotations/", fake.annotations), ("/api/projects/", fake.projects)):
                    if u.path.startswith(prefix):
                        if not self._authed():
                            return self._send(401)
                        rec = table.get(int(u.path[len(prefix) :].strip("/") or 0))
                        return self._send(200 if rec else 404, json.dumps(rec or {"detail": "Not found."}).encode())
                if u.path.rstrip("/") == "/api/predictions":
                    t = fake.tasks.get(int(q.get("task", 0)), {})
                    return self._send(200, json.dumps(t.get("predictions", [])).encode())
                if u.path == "/redirect":
                    return self._send(302, headers={"Location": q["to"]})
                if u.path == "/big":
                    return self._send(200, b"\xff\xd8" + b"0" * 300_000, "image/jpeg")
                if u.path == "/text":
                    return self._send(200, b"<html>not an image</html>", "text/html")
                self._send(404, b"missing", "text/plain")

            def do_PATCH(self) -> None:
                fake.requests.append((self.path, dict(self.headers)))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}"
                u = urlsplit(self.path)
                if not u.path.startswith("/api/projects/"):
                    return self._send(404)
                if not self._authed():
                    return self._send(401)
                rec = fake.projects.get(int(u.path[len("/api/projects/") :].strip("/") or 0))
                if rec is None:
                    return self._send(404, b'{"detail": "Not found."}')
                rec.update(json.loads(body))
                self._send(200, json.dumps(rec).encode())

            def do_POST(self) -> None:
                fake.requests.append((self.path, dict(self.headers)))
                n = int(self.headers.get("Content-Length", 0))
                data = json.loads(self.rfile.read(n) or b"{}")
                if self.path.rstrip("/") == "/api/token/refresh":
                    if data.get("refresh") == PAT:
                        return self._send(200, json.dumps({"access": ACCESS}).encode())
                    return self._send(401, b'{"detail":"bad"}')
                self._send(404)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def ls_server() -> Iterator[FakeLabelStudio]:
    s = FakeLabelStudio()
    yield s
    s.close()


@pytest.fixture
def database_url(request: Any) -> str:
    """The store's engine: "" = SQLite in MODEL_DIR (the default); tests marked ``@both``
    (tests/pgserver.py) run also on a fresh database of the suite's PostgreSQL server."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return ""
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database()


@pytest.fixture
def settings_factory(tmp_path: Path, ls_server: FakeLabelStudio, database_url: str) -> Callable[..., Settings]:
    def make(**env: str) -> Settings:
        base = {
            "LABEL_STUDIO_URL": ls_server.url,
            "LABEL_STUDIO_API_KEY": TOKEN,
            "MODEL_DIR": str(tmp_path / "model_dir"),
            "CAMCUT_DATABASE_URL": database_url,
            "CAMCUT_WEBHOOK_SYNC": "1",
        }
        base.update(env)
        return Settings.from_env(base)

    return make


@pytest.fixture
def app_factory(settings_factory: Callable[..., Settings], camnet: CamNet) -> Callable[..., Any]:
    from backend.app import create_app

    def make(**env: str) -> Any:
        app = create_app(settings_factory(**env), net=camnet)
        app.testing = True
        return app

    return make


@pytest.fixture
def client(app_factory: Callable[..., Any]) -> Any:
    return app_factory().test_client()
