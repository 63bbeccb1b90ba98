"""Issue 12 (speed): the gunicorn worker's peak RSS, reproduced in process.

    .venv/bin/python tools/experiments/speed_memory.py [--config featcut] [--no-pack] [--onednn-cache N]

Replays the benchmark's 96 HTTP /predict requests (bench/httpbench.py: 6 warm-up, then 30 box, 30
tag and 30 interactive requests on the first 30 images, each with a new task id) through the
backend's Flask app in this process, with the worker's malloc settings (backend/gunicorn_conf.py:
two arenas, a 1 MB mmap threshold), and prints VmHWM / VmRSS every 12 requests and the process's
CPU. ``--no-pack``: the fire layers kept dense (model.features.PixelFeatures.pack a no-op, the
code before session 9); ``--onednn-cache``: ONEDNN_PRIMITIVE_CACHE_CAPACITY (default: the
worker's 0; -1: oneDNN's own default).
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

VOC = Path(__file__).resolve().parents[3] / "shared" / "voc2012" / "VOC2012"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--voc", type=Path, default=VOC)
    ap.add_argument("--config", default="featcut")
    ap.add_argument("--no-pack", action="store_true")
    ap.add_argument("--onednn-cache", type=int, default=0)
    a = ap.parse_args()
    if a.onednn_cache >= 0:  # before torch is imported
        os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = str(a.onednn_cache)
    from backend.gunicorn_conf import MMAP_THRESHOLD

    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-8, 2)
    libc.mallopt(-3, MMAP_THRESHOLD)
    from bench.common import load_images, proc_status
    from bench.httpbench import HTTP_MODES, StaticImages, make_request, usable

    images = load_images(a.voc, 30, "train")
    ls = StaticImages(images)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAMCUT_", "LABEL_STUDIO_", "BASIC_AUTH_"))}
    os.environ.clear()
    os.environ.update(env, PORT="9090", WORKERS="1", CAMCUT_CONFIG=a.config, LABEL_STUDIO_URL=ls.url, LOG_LEVEL="WARNING")
    os.environ["MODEL_DIR"] = tempfile.mkdtemp(prefix="camcut-speed-")
    if a.no_pack:
        from model.features import PixelFeatures

        PixelFeatures.pack = lambda self: None  # type: ignore[method-assign]
    from backend.wsgi import app

    client, ids = app.test_client(), itertools.count(1)
    warm = [(m, im) for m in HTTP_MODES for im in usable(m, images)[:2]]
    seq = warm + [(m, im) for m in HTTP_MODES for im in usable(m, images)]
    marks = []
    cpu0 = time.process_time()
    for n, (mode, im) in enumerate(seq, 1):
        body, _ = make_request(mode, im, next(ids))
        r = client.post("/predict", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"{mode} {im.image_id}: HTTP {r.status_code}")
        if n % 12 == 0:
            m = proc_status(os.getpid())
            marks.append({"requests": n, "mode": mode, "VmHWM": round(m["VmHWM"]), "VmRSS": round(m["VmRSS"])})
    end = proc_status(os.getpid())
    out = {"config": a.config, "no_pack": a.no_pack, "onednn_cache": a.onednn_cache, "requests": len(seq)}
    out |= {"peak_mb": round(end["VmHWM"], 1), "end_mb": round(end["VmRSS"], 1), "cpu_s": round(time.process_time() - cpu0, 1)}
    print(json.dumps({**out, "loadavg": os.getloadavg(), "marks": marks}))
    ls.close()


if __name__ == "__main__":
    main()
