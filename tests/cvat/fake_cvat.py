"""A loopback fake of the CVAT REST endpoints that cvat-cli / cvat-sdk 2.80.0 call.

A real CVAT server cannot run here: it ships as Docker images (server, UI, worker) with
Postgres, Redis and OPA, and this machine has neither Docker nor a network. So these tests run
the REAL cvat-cli against this fake, which answers just what ``task auto-annotate`` and the
tags command read (about, tasks, labels, data meta, chunks/frames, annotations) and records
what they upload. Replies follow cvat-sdk's generated models (cvat_sdk/api_client/model/*.py),
which validate required fields and types, so a wrong reply shape fails the test.
"""

from __future__ import annotations

import io
import json
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import PIL.Image

UPDATED = "2026-01-01T00:00:00.000000Z"


@dataclass
class FakeTask:
    id: int
    labels: list[dict[str, Any]]  # {"id", "name", "type"}
    frames: list[tuple[str, bytes]]  # (name, encoded image bytes)
    chunk_size: int = 2
    job_id: int | None = None  # one job covering every frame (its annotations are the task's)
    annotations: dict[str, list] = field(default_factory=lambda: {"tags": [], "shapes": [], "tracks": []})
    patches: list[dict[str, Any]] = field(default_factory=list)  # (action, body) of every PATCH/PUT


class FakeCvat:
    def __init__(self, tasks: list[FakeTask]) -> None:
        self.tasks = {t.id: t for t in tasks}
        self.requests: list[tuple[str, str]] = []
        # Native functions (cvat-cli function create-native) and their annotation-request queue
        # (run-agent --burst): ars are handed out in order, then "ar_assignment": null.
        self.functions: dict[int, dict[str, Any]] = {}
        self.ars: list[dict[str, Any]] = []  # {"ar_id", "ar_params"}
        self.completed: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, str] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeCvat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- replies ---------------------------------------------------------------------------
    def task_json(self, t: FakeTask) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port}/api/tasks/{t.id}"
        return {
            "id": t.id,
            "name": f"task {t.id}",
            "url": url,
            "size": len(t.frames),
            "mode": "annotation",
            "dimension": "2d",
            "status": "annotation",
            "data_chunk_size": t.chunk_size,
            "data_original_chunk_type": "imageset",
            "data_compressed_chunk_type": "imageset",
            "image_quality": 100,
            "data": t.id,
            "subset": "",
            "organization": None,
            "project_id": None,
            "created_date": UPDATED,
            "updated_date": UPDATED,
            "overlap": 0,
            "segment_size": len(t.frames),
            "bug_tracker": "",
            "owner": None,
            "assignee": None,
            "jobs": {"count": 1, "completed": 0, "validation": 0, "url": f"http://127.0.0.1:{self.port}/api/jobs?task_id={t.id}"},
            "labels": {"url": f"http://127.0.0.1:{self.port}/api/labels?task_id={t.id}"},
        }

    def job_task(self, job_id: int) -> FakeTask | None:
        return next((t for t in self.tasks.values() if t.job_id == job_id), None)

    def job_json(self, t: FakeTask) -> dict[str, Any]:
        base = f"http://127.0.0.1:{self.port}/api"
        return {
            "id": t.job_id,
            "task_id": t.id,
            "url": f"{base}/jobs/{t.job_id}",
            "project_id": None,
            "start_frame": 0,
            "stop_frame": len(t.frames) - 1,
            "frame_count": len(t.frames),
            "dimension": "2d",
            "mode": "annotation",
            "organization": None,
            "data_chunk_size": t.chunk_size,
            "data_original_chunk_type": "imageset",
            "data_compressed_chunk_type": "imageset",
            "created_date": UPDATED,
            "updated_date": UPDATED,
            "issues": {"count": 0, "url": f"{base}/issues?job_id={t.job_id}"},
            "labels": {"url": f"{base}/labels?job_id={t.job_id}"},
        }

    def meta_json(self, t: FakeTask) -> dict[str, Any]:
        frames = []
        for name, data in t.frames:
            try:
                w, h = PIL.Image.open(io.BytesIO(data)).size
            except OSError:
                w, h = 1, 1
            frames.append({"name": name, "width": w, "height": h, "related_files": 0, "has_related_context": False})
        return {
            "chunks_updated_date": UPDATED,
            "frames": frames,
            "deleted_frames": [],
            "chunk_size": t.chunk_size,
            "size": len(t.frames),
            "image_quality": 100,
            "start_frame": 0,
            "stop_frame": len(t.frames) - 1,
            "frame_filter": "",
            "included_frames": None,
        }

    def chunk(self, t: FakeTask, number: int) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for i, (name, data) in enumerate(t.frames[number * t.chunk_size : (number + 1) * t.chunk_size]):
                z.writestr(f"{number * t.chunk_size + i:06d}{name[name.rfind('.') :]}", data)
        return buf.getvalue()


def _handler(fake: FakeCvat) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def _send(self, code: int, body: bytes | dict | list, ctype: str = "application/json") -> None:
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def _route(self, method: str) -> None:
            u = urlparse(self.path)
            q = {k: v[0] for k, v in parse_qs(u.query).items()}
            parts = [p for p in u.path.split("/") if p]
            fake.requests.append((method, self.path))
            body = None
            n = int(self.headers.get("Content-Length") or 0)
            if n:
                body = json.loads(self.rfile.read(n) or b"null")
            if parts[:2] == ["api", "server"] and parts[2:] == ["about"]:
                return self._send(
                    200, {"name": "CVAT (fake)", "description": "", "version": "2.80.0", "logo_url": "", "subtitle": ""}
                )
            if parts[:2] == ["api", "users"] and parts[2:] == ["self"]:
                return self._send(
                    200,
                    {
                        "id": 1,
                        "username": "tester",
                        "url": "",
                        "first_name": "",
                        "last_name": "",
                        "email": "",
                        "groups": [],
                        "is_staff": False,
                        "is_superuser": False,
                        "is_active": True,
                        "last_login": UPDATED,
                        "date_joined": UPDATED,
                        "has_analytics_access": False,
                    },
                )
            if parts[:2] == ["api", "functions"]:
                return self._functions(method, parts[2:], body)
            if parts[:2] == ["api", "jobs"] and len(parts) >= 3:
                t = fake.job_task(int(parts[2]))
                if t is None:
                    return self._send(404, {"detail": "Not found."})
                if parts[3:] == [] and method == "GET":
                    return self._send(200, fake.job_json(t))
                parts = ["api", "tasks", str(t.id), *parts[3:]]  # the job's data and annotations are the task's
            if parts[:2] == ["api", "labels"] and method == "GET":
                t = fake.tasks[int(q["task_id"])] if "task_id" in q else fake.job_task(int(q.get("job_id", 0)))
                assert t is not None
                res = [
                    {
                        "id": lab["id"],
                        "name": lab["name"],
                        "type": lab.get("type", "any"),
                        "color": "#ff0000",
                        "attributes": [],
                        "sublabels": [],
                        "has_parent": False,
                        "task_id": t.id,
                    }
                    for lab in t.labels
                ]
                return self._send(200, {"count": len(res), "next": None, "previous": None, "results": res})
            if parts[:2] == ["api", "tasks"] and len(parts) >= 3:
                t = fake.tasks.get(int(parts[2]))
                if t is None:
                    return self._send(404, {"detail": "Not found."})
                rest = parts[3:]
                if rest == [] and method == "GET":
                    return self._send(200, fake.task_json(t))
                if rest == ["data", "meta"]:
                    return self._send(200, fake.meta_json(t))
                if rest == ["data"] and q.get("type") == "chunk":
                    return self._send(200, fake.chunk(t, int(q["number"])), "application/zip")
                if rest == ["data"] and q.get("type") == "frame":
                    return self._send(200, t.frames[int(q["number"])][1], "image/jpeg")
                if rest == ["annotations"] and method == "GET":
                    return self._send(200, {"version": 0, **t.annotations})
                if rest == ["annotations"] and method in ("PATCH", "PUT"):
                    action = q.get("action", "put")
                    t.patches.append({"action": action, "body": body})
                    if action == "create" or method == "PUT":
                        for kind in ("tags", "shapes", "tracks"):
                            if method == "PUT":
                                t.annotations[kind] = []
                            t.annotations[kind].extend((body or {}).get(kind, []))
                    return self._send(200, {"version": 1, **(body or {})})
            return self._send(404, {"detail": f"fake CVAT has no {method} {u.path}"})

        def _functions(self, method: str, rest: list[str], body: Any) -> None:
            if rest == [] and method == "POST":
                fid = len(fake.functions) + 1
                # the server's defaults for fields an interactor may leave out
                fake.functions[fid] = {
                    "min_pos_points": 1,
                    "min_neg_points": -1,
                    "startswith_box": False,
                    "startswith_box_optional": False,
                    **body,
                    "id": fid,
                }
                return self._send(201, fake.functions[fid])
            if len(rest) == 1 and method == "GET":
                fid = int(rest[0])
                if fid in fake.functions:
                    return self._send(200, fake.functions[fid])
            if rest[:1] == ["queues"] and rest[2:3] == ["requests"] and method == "POST":
                verb = rest[-1]
                if verb == "acquire":
                    # each queued AR may name its category ("interactive" unless said otherwise)
                    cat = body.get("request_category")
                    i = next((i for i, a in enumerate(fake.ars) if a.get("category", "interactive") == cat), None)
                    ar = None if i is None else {k: v for k, v in fake.ars.pop(i).items() if k != "category"}
                    return self._send(200, {"ar_assignment": ar})
                if verb == "complete":
                    fake.completed[rest[3]] = body
                    return self._send(200, {})
                if verb == "fail":
                    fake.failed[rest[3]] = body.get("exc_info", "")
                    return self._send(200, {})
                if verb == "update":
                    return self._send(200, {})
            return self._send(404, {"detail": f"fake CVAT has no {method} /api/functions/{'/'.join(rest)}"})

        def do_GET(self) -> None:
            self._route("GET")

        def do_PATCH(self) -> None:
            self._route("PATCH")

        def do_PUT(self) -> None:
            self._route("PUT")

        def do_POST(self) -> None:
            self._route("POST")

    return Handler
