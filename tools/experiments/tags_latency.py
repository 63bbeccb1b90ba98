"""Tag mode latency per image, today's `default` vs today + tagprop, as bench/inproc.py's tag mode.

Per image: decode JPEG + set_image + segment_classes(every GT class, agreement=True), with
`default`, with `default` + class_tagprop=True (TagShares: fire3/fire5 of the same pass, the
propagation, the gate of each mask and of its second opinion) and + class_tag_scales=(1.5,)
(featcut's tag path: one more SqueezeNet pass at 480 px for the second-scale CAM).

    .venv/bin/python tools/experiments/tags_latency.py [N_IMAGES] [ROUNDS]
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import cv2
import numpy as np
import torch
from tags_cache import VOC_ROOT, ids
from tags_common import ROOT

sys.path.insert(0, str(ROOT))
from evaluator.dataset import VocDataset
from model.cnn import CamNet
from model.config import get_config
from model.engine import available_cores
from model.image import decode_image
from model.segmenter import Segmenter


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    # THREADS=1: CPU time per image then equals wall time on an idle core, which is what can be
    # measured honestly while other jobs load the machine (bench's figures are all-cores wall).
    cores = int(os.environ.get("THREADS", available_cores()))
    torch.set_num_threads(cores)
    cv2.setNumThreads(cores)
    ds = VocDataset(VOC_ROOT)
    net = CamNet()
    segs = {
        "default": Segmenter(get_config("default"), net=net, threads=cores),
        "default + class_tagprop": Segmenter(
            dataclasses.replace(get_config("default"), class_tagprop=True), net=net, threads=cores
        ),
        "+ class_tag_scales (1.5,)": Segmenter(
            dataclasses.replace(get_config("default"), class_tagprop=True, class_tag_scales=(1.5,)), net=net, threads=cores
        ),
    }
    images = []
    for iid in ids()[:n]:
        tags = ds.load(iid).classes_present()
        images.append(((ds.root / "JPEGImages" / f"{iid}.jpg").read_bytes(), tags))
    wall: dict[str, list[float]] = {k: [] for k in segs}
    cpu: dict[str, list[float]] = {k: [] for k in segs}
    for r in range(rounds + 1):  # round 0 warms up, untimed; configurations interleaved per image
        for jpeg, tags in images:
            for name, seg in segs.items():
                c0, t0 = time.process_time(), time.perf_counter()
                seg.set_image(decode_image(jpeg))
                seg.segment_classes([(c, None) for c in tags], agreement=True)
                if r:
                    wall[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.process_time() - c0)
    for name in segs:
        print(
            f"{name:26s} wall p50 {1000 * np.median(wall[name]):6.1f} ms p95 {1000 * np.percentile(wall[name], 95):6.1f}"
            f" | CPU p50 {1000 * np.median(cpu[name]):6.1f} ms  ({len(wall[name])} samples, {cores} thread(s))"
        )
    with open("/proc/loadavg") as f:
        print(f"load average {f.read().split()[:3]}")


if __name__ == "__main__":
    main()
