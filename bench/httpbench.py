"""Sections 2 and 4: ``/predict`` on the real gunicorn server, and its worker's memory.

Per configuration a fresh ``gunicorn --config backend/gunicorn_conf.py backend.wsgi:app`` is
started (WORKERS=1, default THREADS, CAMCUT_CONFIG=<config>, MODEL_DIR in a temporary folder,
LABEL_STUDIO_URL = a static file server on 127.0.0.1 in this process that serves the VOC JPEGs
under ``/data/upload/bench/<id>.jpg``). One task per POST, one request at a time over a
keep-alive session; the time is the client's, from sending the request to the whole response
read. A request that answers a 4xx or a task error, or not one mask (or, for a tag, one mask or
one ``empty`` entry: the class has no pixels here) per prompt, is listed in the report's
``failures``; empty tag masks in ``empty_masks``. Only a fault of the server (5xx, 408/429, a
dropped connection, a timeout) stops the run, naming the image.

* ``http_box``: the task carries the image's VOC boxes as a prediction (rectanglelabels,
  percent coordinates) -> the backend's "boxes" mode.
* ``http_tag``: the task data has ``tags`` = the GT classes (and empty annotations /
  predictions) -> "tags" mode.
* ``http_interactive``: ``params.context.result`` = the first VOC box -> "interactive" mode;
  the server downloads, decodes and sets the image per request, so it compares with the
  in-process ``interactive_cold``.

Every task has a new integer id, so the backend also records its predictions in its SQLite
store, as it does for Label Studio.

Memory: the gunicorn worker is the master's child; VmRSS / VmHWM come from
/proc/<worker>/status. After the latency requests the soak continues (cycling box, tag and
interactive tasks over the images) until ``soak`` /predict requests were served since the
server started; RSS is read after request 50 and after the last one (and every 50 between).
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

from model import VOC_CLASSES

from .common import ROOT, BenchImage, gunicorn_workers, proc_status, summarize

HTTP_MODES = ("http_box", "http_tag", "http_interactive")

LABEL_CONFIG = (
    '<View>\n  <Image name="image" value="$image"/>\n'
    '  <RectangleLabels name="box" toName="image">'
    + "".join(f'<Label value="{c}"/>' for c in VOC_CLASSES)
    + "</RectangleLabels>\n"
    '  <BrushLabels name="mask" toName="image">' + "".join(f'<Label value="{c}"/>' for c in VOC_CLASSES) + "</BrushLabels>\n"
    "</View>"
)


class StaticImages:
    """A loopback file server for the benchmark's JPEGs: GET /data/upload/bench/<id>.jpg."""

    def __init__(self, images: list[BenchImage]) -> None:
        files = {im.image_id: im.jpeg for im in images}
        self.hits = 0
        srv = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_GET(self) -> None:
                srv.hits += 1
                stem = Path(self.path.split("?", 1)[0]).stem
                body = files.get(stem) if self.path.startswith("/data/upload/") else None
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "image/jpeg" if body is not None else "text/plain")
                body = body if body is not None else b"not found"
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One gunicorn master + worker for a configuration; stopped by the master's pid."""

    def __init__(
        self, config: str, ls_url: str, log_path: Path, start_timeout: float = 180.0, extra_env: dict[str, str] | None = None
    ) -> None:
        self.config = config
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tempfile.TemporaryDirectory(prefix="camcut-bench-")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CAMCUT_", "LABEL_STUDIO_", "BASIC_AUTH_"))}
        env.update(
            PORT=str(self.port),
            WORKERS="1",
            CAMCUT_CONFIG=config,
            LABEL_STUDIO_URL=ls_url,
            MODEL_DIR=str(Path(self.tmp.name) / "model_dir"),
            LOG_LEVEL="WARNING",
            **(extra_env or {}),
        )
        gunicorn = Path(sys.executable).with_name("gunicorn")
        self.log_file = open(log_path, "ab")  # noqa: SIM115  # the server's log, closed on stop
        self.proc = subprocess.Popen(
            [str(gunicorn), "--config", "backend/gunicorn_conf.py", "backend.wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        self.worker = 0
        deadline = time.monotonic() + start_timeout
        while True:
            if self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"gunicorn for {config!r} exited with {self.proc.returncode}; see {log_path}")
            try:
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"gunicorn for {config!r} did not answer /health in {start_timeout:.0f} s; see {log_path}")
            time.sleep(0.2)
        kids = gunicorn_workers(self.proc.pid)
        if len(kids) != 1:
            self.close()
            raise RuntimeError(f"expected one gunicorn worker under pid {self.proc.pid}, found {kids}")
        self.worker = kids[0]

    def counters(self) -> dict[str, float]:
        r = requests.get(self.url + "/metrics", timeout=30)
        r.raise_for_status()
        return r.json()["counters"]

    def memory(self) -> dict[str, float]:
        return proc_status(self.worker)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()
        self.tmp.cleanup()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _rect(name: str, box: Any, w: int, h: int, rid: str) -> dict[str, Any]:
    x0, y0, x1, y1 = box.clip(w, h)
    return {
        "id": rid,
        "type": "rectanglelabels",
        "from_name": "box",
        "to_name": "image",
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {
            "x": 100.0 * x0 / w,
            "y": 100.0 * y0 / h,
            "width": 100.0 * (x1 - x0) / w,
            "height": 100.0 * (y1 - y0) / h,
            "rotation": 0,
            "rectanglelabels": [name],
        },
    }


def make_request(mode: str, im: BenchImage, task_id: int) -> tuple[dict[str, Any], int]:
    """(JSON body of one /predict call, number of masks expected)."""
    data = {"image": f"/data/upload/bench/{im.image_id}.jpg"}
    body: dict[str, Any] = {"project": "1.1700000000", "label_config": LABEL_CONFIG}
    if mode == "http_box":
        rects = [_rect(n, b, im.width, im.height, f"r{k}") for k, (n, b) in enumerate(im.objects)]
        body["tasks"] = [{"id": task_id, "data": data, "annotations": [], "predictions": [{"result": rects}]}]
        return body, len(rects)
    if mode == "http_tag":
        body["tasks"] = [{"id": task_id, "data": {**data, "tags": list(im.classes)}, "annotations": [], "predictions": []}]
        return body, len(im.classes)  # a mask or an "empty" entry (no pixels of the class found) per tag
    if mode == "http_interactive":
        n, b = im.objects[0]
        body["tasks"] = [{"id": task_id, "data": data}]
        body["params"] = {"context": {"result": [_rect(n, b, im.width, im.height, "i0")]}}
        return body, 1
    raise ValueError(mode)


class Client:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.session = requests.Session()
        self.session.trust_env = False
        self.task_ids = itertools.count(1)
        self.requests = 0
        self.last_overhead = 0.0
        # per-image outcomes that are answers, not faults of the server: reported, the run goes on
        self.failures: list[dict[str, Any]] = []
        self.empty: list[dict[str, Any]] = []

    def predict(self, mode: str, im: BenchImage) -> float:
        """Latency of one /predict in seconds; ``last_overhead`` gets what HTTP added to it.

        The overhead is measured within the same request, so machine noise cannot turn it
        negative: client latency minus the server's own compute (its Server-Timing ``predict``
        minus ``download``). It is what the HTTP path adds over the in-process one: the
        request and response, JSON, Flask, and the image download from Label Studio.
        """
        body, expected = make_request(mode, im, next(self.task_ids))
        t0 = time.perf_counter()
        r = self.session.post(self.server.url + "/predict", json=body, timeout=600)
        content = r.content
        dt = time.perf_counter() - t0
        self.requests += 1
        if r.status_code >= 500 or r.status_code in (408, 429):  # a fault of the server: stop, naming the image
            raise RuntimeError(f"/predict {mode} {im.image_id}: HTTP {r.status_code}: {content[:300]!r}")
        if r.status_code != 200:
            self.failures.append({"mode": mode, "image": im.image_id, "error": f"HTTP {r.status_code}: {content[:300]!r}"})
            return dt
        timing = parse_server_timing(r.headers.get("Server-Timing", ""))
        if "predict" not in timing:
            raise RuntimeError(f"/predict {mode} {im.image_id}: no Server-Timing predict in the answer")
        self.last_overhead = dt - (timing["predict"] - timing.get("download", 0.0)) / 1000.0
        res = r.json()["results"][0]
        n = len(res.get("result") or [])
        empty = res.get("empty") or []
        self.empty.extend({"mode": mode, "image": im.image_id, **e} for e in empty)
        if res.get("error") or n + len(empty) != expected:
            self.failures.append(
                {
                    "mode": mode,
                    "image": im.image_id,
                    "masks": n,
                    "empty": len(empty),
                    "expected": expected,
                    "error": res.get("error"),
                }
            )
        return dt

    def close(self) -> None:
        self.session.close()


def parse_server_timing(header: str) -> dict[str, float]:
    """{name: dur in ms} from a W3C Server-Timing header ('a;dur=1.5, b;dur=2')."""
    out = {}
    for metric in header.split(","):
        name, *params = [p.strip() for p in metric.split(";")]
        for p in params:
            if p.startswith("dur="):
                out[name] = float(p[4:])
    return out


def usable(mode: str, images: list[BenchImage]) -> list[BenchImage]:
    return [im for im in images if (im.classes if mode == "http_tag" else im.objects)]


def run_http(
    config: str,
    images: list[BenchImage],
    repeat: int,
    ls: StaticImages,
    log_path: Path,
    soak: int,
    warmup: int = 2,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """{mode: summary, ..., "memory": {...}} for one configuration's server."""
    out: dict[str, Any] = {}
    with Server(config, ls.url, log_path) as srv:
        cl = Client(srv)
        try:
            mem: dict[str, Any] = {"worker_pid": srv.worker, "after_start": srv.memory(), "series": []}
            marks: dict[int, dict[str, float]] = {}

            def after_request() -> None:
                if cl.requests % 50 == 0:
                    m = srv.memory()
                    marks[cl.requests] = m
                    mem["series"].append({"requests": cl.requests, **m})

            for mode in HTTP_MODES:
                for im in usable(mode, images)[:warmup]:
                    cl.predict(mode, im)
                    after_request()
            rounds: dict[str, list[list[float]]] = {m: [] for m in HTTP_MODES}
            overheads: dict[str, list[list[float]]] = {m: [] for m in HTTP_MODES}
            c0 = srv.counters()
            for r in range(repeat):
                t0 = time.perf_counter()
                for mode in HTTP_MODES:
                    samples, extra = [], []
                    for im in usable(mode, images):
                        samples.append(cl.predict(mode, im))
                        extra.append(cl.last_overhead)
                        after_request()
                    rounds[mode].append(samples)
                    overheads[mode].append(extra)
                log(f"  http round {r + 1}/{repeat} {config}: {time.perf_counter() - t0:.1f} s")
            for mode in HTTP_MODES:
                out[mode] = summarize(rounds[mode])
                out[f"{mode}_overhead"] = summarize(overheads[mode])
            c1 = srv.counters()
            n_req = c1["predict_requests"] - c0["predict_requests"]
            if n_req > 0:  # the app's own time in CamCutModel.predict (download included), for comparison
                out["server_predict_ms_mean"] = 1000.0 * (c1["seconds_predicting"] - c0["seconds_predicting"]) / n_req
            if soak > 0:
                t0 = time.perf_counter()
                cycle = itertools.cycle(
                    [(m, im) for im in images for m in HTTP_MODES if (im.classes if m == "http_tag" else im.objects)]
                )
                while cl.requests < soak:
                    mode, im = next(cycle)
                    cl.predict(mode, im)
                    after_request()
                    if cl.requests % 200 == 0:
                        log(f"  soak {config}: {cl.requests}/{soak} requests, RSS {srv.memory()['VmRSS']:.0f} MB")
                mem["soak_seconds"] = time.perf_counter() - t0
                end = srv.memory()
                mem["soak_requests"] = cl.requests
                mem["rss_after_50"] = marks.get(50, mem["series"][0] if mem["series"] else end)["VmRSS"]
                mem["rss_after_soak"] = end["VmRSS"]
                mem["rss_growth"] = mem["rss_after_soak"] - mem["rss_after_50"]
                # A leak grows without end; filling caches and malloc arenas levels off. The
                # second half of the soak tells the two apart.
                half = marks.get(50 * max(1, round(cl.requests / 100)))
                if half is not None:
                    mem["rss_growth_second_half"] = mem["rss_after_soak"] - half["VmRSS"]
            end = srv.memory()
            mem["requests"] = cl.requests
            mem["rss_end"] = end["VmRSS"]
            mem["rss_peak"] = end["VmHWM"]
            out["memory"] = mem
            out["failures"], out["empty_masks"] = cl.failures, cl.empty
        finally:
            cl.close()
    return out
