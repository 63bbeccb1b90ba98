"""``python -m backend.bulk`` against a fake Label Studio API on 127.0.0.1.

The fake serves ``/api/projects/<id>/``, ``/api/tasks/`` pages (LS 1.23 shape: ``{"tasks",
"total", ...}``, 404 past the last page), ``POST /api/predictions/``, ``DELETE
/api/predictions/<id>/`` and the task images from VOC (``/data/upload/<stem>.jpg``, token
required). Every prediction POST is counted per task, so "predicted twice" is visible.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from backend import bulk
from backend.config import Settings
from backend.model import CamCutModel
from tests.backend.conftest import LABEL_CONFIG, TOKEN, image_size, jpeg, rect, voc_boxes

PROJECT = 7
# dog, cat, tv monitor, aeroplane (different sizes): each with its first VOC box as a prediction ("voc-boxes")
STEMS = ("2007_000063", "2007_000528", "2007_000039", "2007_000032")


def box_task(tid: int, stem: str) -> dict[str, Any]:
    w, h = image_size(stem)
    name, box = voc_boxes(stem)[0]
    label = {"cat": "Cat", "person": "people", "tvmonitor": "widget"}.get(name, name)
    return {
        "id": tid,
        "data": {"image": f"/data/upload/{stem}.jpg"},
        "annotations": [],
        "predictions": [
            {"id": 1000 + tid, "task": tid, "model_version": "voc-boxes", "score": 1.0, "result": [rect(label, box, w, h)]}
        ],
    }


class FakeLS:
    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self.tasks = {t["id"]: t for t in tasks}
        self.posts: dict[int, int] = {}
        self.pages: list[tuple[int, int]] = []
        self.deleted: list[int] = []
        self.auth_headers: set[str] = set()
        self.log: list[tuple[str, Any]] = []  # ("image", stem) / ("post", task) in arrival order
        self.next_id = 5000
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, code: int, body: Any = None, ctype: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body if body is not None else {}).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authed(self) -> bool:
                a = self.headers.get("Authorization", "")
                fake.auth_headers.add(a)
                return a == f"Token {TOKEN}"

            def do_GET(self) -> None:
                u = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                if not self._authed():
                    return self._send(401, {"detail": "Authentication credentials were not provided."})
                if u.path.startswith("/data/upload/"):
                    p = jpeg(Path(u.path).stem)
                    fake.log.append(("image", Path(u.path).stem))
                    if not p.is_file():
                        return self._send(404, b"not found", "text/plain")
                    return self._send(200, p.read_bytes(), "image/jpeg")
                if u.path == f"/api/projects/{PROJECT}/":
                    return self._send(200, {"id": PROJECT, "title": "p", "label_config": LABEL_CONFIG})
                if u.path.startswith("/api/projects/"):
                    return self._send(404, {"detail": "Not found."})
                if u.path == "/api/tasks/":
                    assert q["project"] == str(PROJECT) and q["fields"] == "all" and q["resolve_uri"] == "false"
                    page, size = int(q["page"]), int(q["page_size"])
                    fake.pages.append((page, size))
                    with fake.lock:
                        ids = sorted(fake.tasks)
                        chunk = [json.loads(json.dumps(fake.tasks[i])) for i in ids[(page - 1) * size : page * size]]
                    if not chunk:
                        return self._send(404, {"detail": "Invalid page."})
                    return self._send(200, {"total": len(ids), "total_annotations": 0, "total_predictions": 0, "tasks": chunk})
                self._send(404, {"detail": "Not found."})

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", 0))
                data = json.loads(self.rfile.read(n) or b"{}")
                if not self._authed():
                    return self._send(401, {"detail": "no"})
                if self.path == "/api/predictions/":
                    tid = data.get("task")
                    with fake.lock:
                        if tid not in fake.tasks:
                            return self._send(400, {"task": ["Invalid pk"]})
                        if not isinstance(data.get("result"), list) or not isinstance(data.get("model_version"), str):
                            return self._send(400, {"result": ["bad"]})
                        fake.next_id += 1
                        pred = {
                            "id": fake.next_id,
                            "task": tid,
                            "result": data["result"],
                            "score": data.get("score"),
                            "model_version": data["model_version"],
                        }
                        fake.tasks[tid]["predictions"].append(pred)
                        fake.posts[tid] = fake.posts.get(tid, 0) + 1
                        fake.log.append(("post", tid))
                    return self._send(201, pred)
                self._send(404)

            def do_DELETE(self) -> None:
                if not self._authed():
                    return self._send(401, {"detail": "no"})
                pid = int(self.path.rstrip("/").rsplit("/", 1)[1])
                with fake.lock:
                    for t in fake.tasks.values():
                        t["predictions"] = [p for p in t["predictions"] if p["id"] != pid]
                    fake.deleted.append(pid)
                self._send(204, b"")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def ours(self, tid: int) -> list[dict[str, Any]]:
        return [p for p in self.tasks[tid]["predictions"] if str(p["model_version"]).startswith("camcut-")]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_ls() -> Iterator[FakeLS]:
    tasks = [box_task(10 + i, s) for i, s in enumerate(STEMS)]
    # a bad task in the middle: its image does not exist (404); its URL carries the key, which must not leak
    tasks.insert(
        2, {"id": 99, "data": {"image": f"/data/upload/no_such_image.jpg?token={TOKEN}"}, "annotations": [], "predictions": []}
    )
    s = FakeLS(tasks)
    yield s
    s.close()


@pytest.fixture
def env(tmp_path: Path, fake_ls: FakeLS) -> dict[str, str]:
    return {"LABEL_STUDIO_URL": fake_ls.url, "LABEL_STUDIO_API_KEY": TOKEN, "MODEL_DIR": str(tmp_path / "model_dir")}


@pytest.fixture
def model(env: dict[str, str], camnet: Any) -> CamCutModel:
    return CamCutModel(Settings.from_env(env), net=camnet)


def run(env: dict[str, str], *args: str, model: CamCutModel | None = None, on_outcome: Any = None) -> int:
    return bulk.main(["--project", str(PROJECT), "--no-progress", *args], env=env, model=model, on_outcome=on_outcome)


def state_lines(env: dict[str, str]) -> list[dict[str, Any]]:
    p = Path(env["MODEL_DIR"]) / f"bulk-{PROJECT}.jsonl"
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


GOOD = [10, 11, 12, 13]


def test_all_tasks_paginated_predicted_and_a_bad_task_does_not_stop_the_run(
    fake_ls: FakeLS, env: dict[str, str], model: CamCutModel, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    code = run(env, "--workers", "0", "--page-size", "2", model=model)
    out, err = capsys.readouterr()
    assert code == bulk.EXIT_FAILED, out + err
    # 5 tasks at 2 per page: pages 1, 2, 3 (the last one short)
    assert [p for p, _ in fake_ls.pages] == [1, 2, 3]
    for tid, stem in zip(GOOD, STEMS, strict=False):
        [pred] = fake_ls.ours(tid)
        assert fake_ls.posts[tid] == 1
        assert pred["result"] and pred["result"][0]["type"] == "brushlabels"
        w, h = image_size(stem)
        from label_studio_sdk.converter.brush import decode_rle

        for res in pred["result"]:
            assert (res["original_width"], res["original_height"]) == (w, h)
            assert np.asarray(decode_rle(res["value"]["rle"])).size == w * h * 4
    assert 99 not in fake_ls.posts and fake_ls.ours(99) == []
    assert "failed          1" in out and "predicted       4" in out and "tasks total     5" in out
    assert "failed task 99: Label Studio refused the image (HTTP 4xx)" in out
    assert (
        "task 99 failed: Label Studio refused the image (HTTP 4xx)" in err
        and "task 99 failed: Label Studio refused" in caplog.text
    )
    # the API key never shows: not in the summary, the log lines, nor the records
    assert TOKEN not in out + err + caplog.text
    assert "token=***" in out
    recs = state_lines(env)
    assert sorted(r["task"] for r in recs if r["status"] == "done") == GOOD
    assert [r["task"] for r in recs if r["status"] == "failed"] == [99]
    assert TOKEN not in json.dumps(recs)
    assert all(r["model_version"] == model.model_version(str(PROJECT)) for r in recs if r["status"] == "done")
    assert all(a == f"Token {TOKEN}" for a in fake_ls.auth_headers)


def test_resume_after_interruption_predicts_each_task_once(
    fake_ls: FakeLS, env: dict[str, str], model: CamCutModel, capsys: pytest.CaptureFixture[str]
) -> None:
    del fake_ls.tasks[99]
    seen: list[int] = []

    def interrupt_after_two(o: bulk.Outcome) -> None:
        seen.append(o.task)
        if len(seen) == 2:
            raise KeyboardInterrupt

    assert run(env, "--workers", "0", "--page-size", "3", model=model, on_outcome=interrupt_after_two) == bulk.EXIT_INTERRUPTED
    assert "INTERRUPTED" in capsys.readouterr().out
    assert sorted(fake_ls.posts) == seen == GOOD[:2]
    assert [r["task"] for r in state_lines(env)] == GOOD[:2]

    assert run(env, "--workers", "0", model=model) == bulk.EXIT_OK
    out = capsys.readouterr().out
    assert fake_ls.posts == {t: 1 for t in GOOD}, "a task was predicted twice"
    assert "predicted       2" in out and "already done: 2 in the state file" in out
    assert all(len(fake_ls.ours(t)) == 1 for t in GOOD)

    # a third run has nothing left to do
    assert run(env, "--workers", "0", model=model) == bulk.EXIT_OK
    assert "predicted       0" in capsys.readouterr().out
    assert fake_ls.posts == {t: 1 for t in GOOD}


def test_crash_between_post_and_state_record_is_not_predicted_again(
    fake_ls: FakeLS, env: dict[str, str], model: CamCutModel, capsys: pytest.CaptureFixture[str]
) -> None:
    del fake_ls.tasks[99]
    assert run(env, "--workers", "0", "--limit", "2", model=model) == bulk.EXIT_OK
    assert sorted(fake_ls.posts) == GOOD[:2]
    # killed after LS stored task 11's prediction but before its line was complete on disk: a torn line
    p = Path(env["MODEL_DIR"]) / f"bulk-{PROJECT}.jsonl"
    lines = p.read_text().splitlines()
    p.write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    capsys.readouterr()
    assert run(env, "--workers", "0", model=model) == bulk.EXIT_OK
    out = capsys.readouterr().out
    assert fake_ls.posts == {t: 1 for t in GOOD}
    assert "1 in the state file, 1 with a camcut-" in out
    recs = state_lines_tolerant(p)
    assert sorted(r["task"] for r in recs) == [10, 12, 13]  # the torn line stays unreadable, the next ones are whole


def state_lines_tolerant(p: Path) -> list[dict[str, Any]]:
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


@pytest.mark.slow  # 16 s
def test_worker_processes_interrupted_then_resumed(
    fake_ls: FakeLS, env: dict[str, str], model: CamCutModel, capsys: pytest.CaptureFixture[str]
) -> None:
    """2 spawned workers; Ctrl-C after the first result: the tasks in flight are finished and
    recorded, the rest is left; the second run does only the rest."""
    del fake_ls.tasks[99]

    def interrupt(o: bulk.Outcome) -> None:
        raise KeyboardInterrupt

    assert run(env, "--workers", "2", "--batch", "1", model=model, on_outcome=interrupt) == bulk.EXIT_INTERRUPTED
    first = dict(fake_ls.posts)
    recorded = [r["task"] for r in state_lines(env)]
    assert 1 <= len(first) < len(GOOD) and sorted(recorded) == sorted(first)
    capsys.readouterr()
    assert run(env, "--workers", "0", model=model) == bulk.EXIT_OK
    assert fake_ls.posts == {t: 1 for t in GOOD}, "a task was predicted twice"
    assert f"predicted       {len(GOOD) - len(first)}" in capsys.readouterr().out


def test_overwrite_replaces_our_prediction(fake_ls: FakeLS, env: dict[str, str], model: CamCutModel) -> None:
    for t in (99, 12, 13):
        del fake_ls.tasks[t]
    assert run(env, "--workers", "0", model=model) == bulk.EXIT_OK
    old = {t: fake_ls.ours(t)[0]["id"] for t in (10, 11)}
    assert run(env, "--workers", "0", model=model) == bulk.EXIT_OK and fake_ls.posts == {10: 1, 11: 1}
    assert run(env, "--workers", "0", "--overwrite", model=model) == bulk.EXIT_OK
    assert fake_ls.posts == {10: 2, 11: 2}
    assert sorted(fake_ls.deleted) == sorted(old.values())
    for t in (10, 11):
        [p] = fake_ls.ours(t)
        assert p["id"] != old[t]
        assert [q["model_version"] for q in fake_ls.tasks[t]["predictions"]] == ["voc-boxes", p["model_version"]]


@pytest.mark.parametrize("case", ["bad key", "unknown project", "unreachable", "no url", "bad env"])
def test_usage_errors_exit_2_without_leaking_the_key(
    case: str, fake_ls: FakeLS, env: dict[str, str], capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    args = ["--project", str(PROJECT), "--no-progress", "--workers", "0"]
    secret = TOKEN
    if case == "bad key":
        secret = "wrong-key-ABCDEF123456"
        args += ["--api-key", secret]
        expect = "HTTP 401"
    elif case == "unknown project":
        args[1] = "12345"
        expect = "project 12345 does not exist"
    elif case == "unreachable":
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**env, "LABEL_STUDIO_URL": f"http://127.0.0.1:{port}"}
        expect = "cannot reach Label Studio"
    elif case == "no url":
        env = {**env, "LABEL_STUDIO_URL": ""}
        expect = "no Label Studio URL"
    else:
        env = {**env, "CAMCUT_MAX_CLASSES": "many"}
        expect = "CAMCUT_MAX_CLASSES"
    assert bulk.main(args, env=env) == bulk.EXIT_USAGE
    out, err = capsys.readouterr()
    assert expect in err
    assert secret not in out + err + caplog.text
    assert fake_ls.posts == {}
    assert not (Path(env["MODEL_DIR"]) / f"bulk-{PROJECT}.jsonl").exists()


def test_a_second_run_on_the_same_state_file_is_refused(tmp_path: Path) -> None:
    a = bulk.StateFile(tmp_path / "s.jsonl", 1).open()
    try:
        with pytest.raises(bulk.UsageError, match="in use"):
            bulk.StateFile(tmp_path / "s.jsonl", 1).open()
        a.append({"task": 1, "status": "done", "model_version": "v1"})
        a.append({"task": 2, "status": "done", "model_version": "v0"})
        a.append({"task": 3, "status": "failed", "model_version": "v1"})
    finally:
        a.close()
    with open(tmp_path / "s.jsonl", "a") as fh:
        fh.write('{"project": 1, "task": 4, "sta')  # torn
        fh.write("\n" + json.dumps({"project": 2, "task": 5, "status": "done", "model_version": "v1"}) + "\n")
    b = bulk.StateFile(tmp_path / "s.jsonl", 1).open()
    try:
        assert b.done("v1") == {1}  # other model version, failed, torn and other project lines do not count
        b.append({"task": 3, "status": "done", "model_version": "v1"})
        assert b.done("v1") == {1, 3}
    finally:
        b.close()


def test_workers_that_cannot_start_stop_the_run_with_exit_2(
    fake_ls: FakeLS, env: dict[str, str], model: CamCutModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The parent's model is fine but the spawned workers cannot load their weights: no endless
    respawning, no prediction, a clear message and exit 2; nothing is recorded as done."""
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"not a checkpoint")
    code = run({**env, "CAMCUT_WEIGHTS": str(bad)}, "--workers", "1", model=model)
    out, err = capsys.readouterr()
    assert code == bulk.EXIT_USAGE, out + err
    assert "ABORTED: worker start failed" in out
    assert fake_ls.posts == {}
    assert all(r["status"] != "done" for r in state_lines(env))
