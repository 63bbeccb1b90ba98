"""Section 3: throughput with every core busy.

One process per core (multiprocessing "spawn"; torch and OpenCV limited to 1 thread each),
each running box mode (decode + set_image + every VOC box + RLE, as in-process) over its
shard ``images[i::cores]``. Each process loads its model and warms up on its first image
before a barrier; the parent times from the barrier's release to the last process's report.
This is repeated ``repeat`` times (a barrier per round); images/s = images / wall time, and
the reported figure is the median over rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from multiprocessing import get_context
from typing import TYPE_CHECKING, Any

from .common import BenchImage, cores

if TYPE_CHECKING:
    from model.config import EngineConfig


def _worker(config: EngineConfig, shard: list[BenchImage], repeat: int, barrier: Any, results: Any) -> None:
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    from backend.model import mask_to_rle
    from model.image import decode_image
    from model.segmenter import Segmenter

    seg = Segmenter(config)

    def one(im: BenchImage) -> None:
        seg.set_image(decode_image(im.jpeg))
        for name, box in im.objects:
            mask_to_rle(seg.segment_box(box, name, agreement=True).mask)

    if shard:
        one(shard[0])  # warm-up
    for r in range(repeat):
        barrier.wait()
        t0 = time.perf_counter()
        for im in shard:
            one(im)
        results.put((r, len(shard), time.perf_counter() - t0))


def run_throughput(config: EngineConfig, images: list[BenchImage], repeat: int, processes: int | None = None,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    n = processes or cores()
    imgs = [im for im in images if im.objects]
    shards = [imgs[i::n] for i in range(n)]
    ctx = get_context("spawn")
    barrier = ctx.Barrier(n + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(config, shards[i], repeat, barrier, results), daemon=True) for i in range(n)]
    for p in procs:
        p.start()
    rounds = []
    try:
        for r in range(repeat):
            barrier.wait(timeout=600)
            t0 = time.perf_counter()
            done = [results.get(timeout=3600) for _ in range(n)]
            wall = time.perf_counter() - t0
            count = sum(d[1] for d in done)
            rounds.append({"images": count, "wall_s": wall, "images_per_s": count / wall,
                           "busy_s": [d[2] for d in done]})
            log(f"  throughput round {r + 1}/{repeat} {config.name}: {count} images in {wall:.1f} s = {count / wall:.2f} img/s")
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.terminate()
                p.join()
    return {
        "images_per_s": statistics.median(r["images_per_s"] for r in rounds),
        "processes": n,
        "rounds": rounds,
    }
