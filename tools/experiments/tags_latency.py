"""Tag mode latency per image, today's `default` vs today + tagprop, as bench/inproc.py's tag mode.

Per image: decode JPEG + set_image + segment_classes(every GT class, agreement=True) (+ for
tagprop: SqueezeNet's fire3/fire5 outputs, the propagation and the gate). Before the engine
integration the fire outputs come from a second CNN pass (model.features.forward_features),
so the tagprop figure is an upper bound: integrated, the one pass gives both.

    .venv/bin/python tools/experiments/tags_latency.py [N_IMAGES] [ROUNDS]
"""

from __future__ import annotations

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
from model import voc
from model.engine import Segmenter, available_cores, get_config
from model.features import forward_features
from model.image import decode_image
from model.tagprop import TagParams, gate, propagated_shares


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    # THREADS=1: CPU time per image then equals wall time on an idle core, which is what can be
    # measured honestly while other jobs load the machine (bench's figures are all-cores wall).
    cores = int(os.environ.get("THREADS", available_cores()))
    torch.set_num_threads(cores)
    cv2.setNumThreads(cores)
    ds = VocDataset(VOC_ROOT)
    seg = Segmenter(get_config("default"), threads=cores)
    images = []
    for iid in ids()[:n]:
        tags = ds.load(iid).classes_present()
        images.append(((ds.root / "JPEGImages" / f"{iid}.jpg").read_bytes(), tags))
    params = TagParams()
    times: dict[str, list[float]] = {k: [] for k in ("today", "today + tagprop", "tagprop part", "today cpu", "tagprop part cpu")}
    for r in range(rounds + 1):  # round 0 warms up, untimed
        for jpeg, tags in images:
            c0, t0 = time.process_time(), time.perf_counter()
            seg.set_image(decode_image(jpeg))
            res = seg.segment_classes([(c, None) for c in tags], agreement=True)
            c1, t1 = time.process_time(), time.perf_counter()
            p = forward_features(seg.net.net, seg.image, seg.config.cnn_max_side, ("fire3", "fire5"))
            cams = seg.cnn.voc_cams[[voc.voc_index(c) - 1 for c in tags]]
            share = propagated_shares(p.input_shape, cams, [p.layers["fire3"], p.layers["fire5"]], seg.image.shape[:2], params)
            gate(np.stack([x.mask for x in res]), share, params)  # type: ignore[union-attr]
            c2, t2 = time.process_time(), time.perf_counter()
            if r:
                times["today cpu"].append(c1 - c0)
                times["tagprop part cpu"].append(c2 - c1)
                times["today"].append(t1 - t0)
                times["today + tagprop"].append(t2 - t0)
                times["tagprop part"].append(t2 - t1)
    for k, v in times.items():
        print(f"{k:20s} p50 {1000 * np.median(v):6.1f} ms  p95 {1000 * np.percentile(v, 95):6.1f} ms  ({len(v)} samples)")
    with open("/proc/loadavg") as f:
        print(f"load average {f.read().split()[:3]}")


if __name__ == "__main__":
    main()
