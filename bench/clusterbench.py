"""``python -m bench bulk``: images/s of ``camcut bulk`` on the local path and on a Dask cluster.

``python -m bench bulk --voc ../shared/voc2012/VOC2012 --images 24 --workers 1,2 --out runs/bench-bulk``

The whole bulk command (backend/bulk: list the tasks, download each image over HTTP, predict
every VOC box of it, post the prediction, fsync the state line) against a stub Label Studio on
loopback (project, task pages, images, predictions: the API calls camcut bulk makes, and
nothing of LS's own cost), for each worker count N:

* ``local N``: ``--workers N`` spawned processes on this machine;
* ``cluster N``: ``--scheduler`` on a loopback Dask cluster of N ``dask worker --nthreads 1``
  processes (bench/cluster.py), started before the run, as a cluster outlives the runs it serves.

Two rates per run: ``with start-up`` = tasks / the run's predicting time (spawning the pool,
loading the model on every worker included), the summary's figure; ``steady`` = tasks after the
first / the time from the first recorded task to the last (what a long run sustains).
Everything shares this machine's cores: the client, the stub LS and the workers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .cluster import LocalDaskCluster
from .common import BenchImage, load_images, machine_info

PROJECT, TOKEN = 1, "bench-token-0123456789"


def label_config(images: list[BenchImage]) -> str:
    labels = "".join(f'<Label value="{c}"/>' for c in sorted({n for im in images for n, _ in im.objects}))
    return (
        '<View><Image name="image" value="$image"/>'
        f'<RectangleLabels name="box" toName="image">{labels}</RectangleLabels>'
        f'<BrushLabels name="mask" toName="image">{labels}</BrushLabels></View>'
    )


def task(tid: int, im: BenchImage) -> dict[str, Any]:
    w, h = im.width, im.height
    boxes = [
        {
            "id": f"b{i}",
            "type": "rectanglelabels",
            "from_name": "box",
            "to_name": "image",
            "original_width": w,
            "original_height": h,
            "value": {
                "x": 100 * b.x0 / w,
                "y": 100 * b.y0 / h,
                "width": 100 * (b.x1 - b.x0) / w,
                "height": 100 * (b.y1 - b.y0) / h,
                "rotation": 0,
                "rectanglelabels": [name],
            },
        }
        for i, (name, b) in enumerate(im.objects)
    ]
    pred = {"id": 100000 + tid, "task": tid, "model_version": "voc-boxes", "score": 1.0, "result": boxes}
    return {"id": tid, "data": {"image": f"/data/upload/{im.image_id}.jpg"}, "annotations": [], "predictions": [pred]}


class StubLabelStudio:
    """The part of LS's API that camcut bulk calls, served from memory on 127.0.0.1."""

    def __init__(self, images: list[BenchImage]) -> None:
        self.tasks = [task(i + 1, im) for i, im in enumerate(images)]
        self.jpegs = {im.image_id: im.jpeg for im in images}
        self.config = label_config(images)
        self.posts = 0
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, code: int, body: Any, ctype: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                u = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                if self.headers.get("Authorization") != f"Token {TOKEN}":
                    return self._send(401, {"detail": "no"})
                if u.path.startswith("/data/upload/"):
                    return self._send(200, stub.jpegs[Path(u.path).stem], "image/jpeg")
                if u.path == f"/api/projects/{PROJECT}/":
                    return self._send(200, {"id": PROJECT, "label_config": stub.config})
                if u.path == "/api/tasks/":
                    page, size = int(q["page"]), int(q["page_size"])
                    chunk = stub.tasks[(page - 1) * size : page * size]
                    if not chunk:
                        return self._send(404, {"detail": "Invalid page."})
                    return self._send(200, {"tasks": chunk, "total": len(stub.tasks)})
                self._send(404, {"detail": "Not found."})

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with stub.lock:
                    stub.posts += 1
                    n = stub.posts
                self._send(201, {"id": n})

            def do_PATCH(self) -> None:  # the project's model version (backend/version_sync.py)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._send(200, {"id": PROJECT})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def one_run(images: list[BenchImage], workdir: Path, workers: int, scheduler: str | None) -> dict[str, Any]:
    from backend.bulk import BulkRun, Options
    from backend.config import Settings

    stub = StubLabelStudio(images)
    stamps: list[float] = []
    try:
        env = {"LABEL_STUDIO_URL": stub.url, "LABEL_STUDIO_API_KEY": TOKEN, "MODEL_DIR": str(workdir), "LOG_LEVEL": "ERROR"}
        opts = Options(project=PROJECT, workers=workers, state=workdir / "state.jsonl", progress=False, scheduler=scheduler)
        summary = BulkRun(opts, Settings.from_env(env), on_outcome=lambda o: stamps.append(time.monotonic())).run()
    finally:
        stub.close()
    n = summary.predicted + summary.failed
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 2 and stamps[-1] > stamps[0] else 0.0
    return {
        "tasks": n,
        "predicted": summary.predicted,
        "failed": summary.failed,
        "posts": stub.posts,
        "predict_s": round(summary.predict_seconds, 2),
        "rate_with_startup": round(summary.rate, 2),
        "rate_steady": round(steady, 2),
        "loadavg": list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench bulk", description=__doc__.split("\n\n")[0])
    ap.add_argument("--voc", default=os.environ.get("CAMCUT_VOC", "../shared/voc2012/VOC2012"))
    ap.add_argument("--images", type=int, default=24, help="first N train images, one task each")
    ap.add_argument("--workers", default="1,2", help="comma list of worker counts")
    ap.add_argument("--paths", default="local,cluster", help="comma list: local, cluster")
    ap.add_argument("--out", default="runs/bench-bulk")
    a = ap.parse_args(argv)
    counts = [int(x) for x in a.workers.split(",") if x.strip()]
    images = [im for im in load_images(a.voc, a.images) if im.objects]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "command": "python -m bench bulk " + " ".join(sys.argv[2:] if argv is None else argv),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "images": len(images),
        "boxes": sum(len(im.objects) for im in images),
        "runs": {},
    }
    paths = {p.strip() for p in a.paths.split(",")}
    for n in counts:
        if "local" in paths:
            with tempfile.TemporaryDirectory() as d:
                doc["runs"][f"local {n}"] = r = one_run(images, Path(d), n, None)
                print(f"local   {n} worker(s): {r}", file=sys.stderr, flush=True)
        if "cluster" not in paths:
            continue
        with tempfile.TemporaryDirectory() as d, LocalDaskCluster(workers=n, log_dir=out / f"dask-{n}") as c:
            doc["runs"][f"cluster {n}"] = r = one_run(images, Path(d), n, c.address)
            print(f"cluster {n} worker(s): {r}", file=sys.stderr, flush=True)
    rows = [
        "| path | workers | tasks | images/s with start-up | images/s steady | load avg (1 min) after |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in doc["runs"].items():
        path, n = name.split()
        rates = f"{r['rate_with_startup']:.2f} | {r['rate_steady']:.2f}"
        rows.append(f"| {path} | {n} | {r['predicted']}/{r['tasks']} | {rates} | {r['loadavg'][0]:.1f} |")
    m = doc["machine"]
    text = (
        f"# camcut bulk: local processes and a Dask cluster\n\nCommand: `{doc['command']}`  \nDate: {doc['date']}  \n"
        f"Machine: {m['nproc']} cores ({m['cpu_model']}); load average at start {m['loadavg_at_start'][0]:.2f}  \n"
        f"Images: {doc['images']} VOC2012 train images ({doc['boxes']} boxes), one task each, stub Label Studio on loopback\n\n"
        + "\n".join(rows)
        + "\n"
    )
    (out / "bench-bulk.json").write_text(json.dumps(doc, indent=1))
    (out / "bench-bulk.md").write_text(text)
    print(text)
    return 0
