"""Predicting alone, one task at a time: a spawned local process beside a Dask worker.

``python tools/experiments/dask_task_overhead.py [--images 12] [--rounds 2]``

The same bulk tasks (the first N VOC train images, each with its VOC boxes, served by the
stub Label Studio of bench/clusterbench.py) are predicted with ``predict_only`` (download +
predict, no post) in a spawned process (as the local runner's workers) and in a loopback
``dask worker --nthreads 1`` (as the cluster runner's), one task at a time, alternately per
round. Prints the median seconds per task of each (the first task, the model load, left out).
Written to look for the per-task gap in ``python -m bench bulk``'s steady rates.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from backend.bulk.cluster import CamcutPlugin, plugin_name, predict_on_worker
from backend.config import Settings
from bench.cluster import LocalDaskCluster
from bench.clusterbench import PROJECT, TOKEN, StubLabelStudio
from bench.common import load_images


def local_worker(settings: Settings, tasks: list[dict[str, Any]], config: str, q: Any) -> None:
    from backend.bulk.worker import predict_only

    model = CamcutPlugin(settings).model()
    out = []
    for t in tasks:
        t0 = time.monotonic()
        predict_only(model, PROJECT, config, t)
        out.append(time.monotonic() - t0)
    q.put(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--voc", default="../shared/voc2012/VOC2012")
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--worker-env", nargs="*", default=[], help="VAR=VALUE for the dask processes")
    a = ap.parse_args()
    images = [im for im in load_images(a.voc, a.images) if im.objects]
    stub = StubLabelStudio(images)
    env = {"LABEL_STUDIO_URL": stub.url, "LABEL_STUDIO_API_KEY": TOKEN, "MODEL_DIR": "/tmp/camcut-dask-overhead"}
    settings = Settings.from_env(env)
    tasks = stub.tasks * 2
    os.environ["OMP_NUM_THREADS"] = "1"  # as the local runner sets for its children
    cenv = {**os.environ, **dict(kv.split("=", 1) for kv in a.worker_env)}
    with LocalDaskCluster(workers=1, env=cenv) as c, c.client() as cl:
        name = plugin_name(settings)
        cl.register_plugin(CamcutPlugin(settings), name=name)
        for r in range(a.rounds):
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            p = ctx.Process(target=local_worker, args=(settings, tasks, stub.config, q))
            p.start()
            local = q.get()[1:]
            p.join()
            futures = (cl.submit(predict_on_worker, name, PROJECT, stub.config, t, pure=False) for t in tasks)
            dask = [f.result()["seconds"] for f in futures][1:]  # one at a time: each result before the next submit
            print(
                f"round {r + 1}: median s per task: local process {statistics.median(local):.3f}, "
                f"dask worker {statistics.median(dask):.3f} (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
    stub.close()


if __name__ == "__main__":
    main()
