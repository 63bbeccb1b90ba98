"""Issue 12 session 8: featcut's own box core run on each served tag mask's box, on the 205 VOC images.

    .venv/bin/python tools/experiments/tags_boxcore.py [STEP]

Per tag (tags = the classes present): the served featcut mask; the box core (`segment_box`, the
featcut cut behind the box path, its CAM-core colour fit) on the bounding box of that mask, or on
the box of each of its connected components of at least 10% of the largest one's area (a box per
instance), alone and intersected with the served mask, with the served mask as the core's
``previous`` (its starting point) or without. Prints class-wise binary mIoU on all / A / B / E / O,
per-class IoU and the CPU of the box cuts per tag.
"""

from __future__ import annotations

import sys
import time

import cv2
import numpy as np
import torch
from tags_cache import VOC_ROOT, ids
from tags_common import SPLITS, per_class, report, split_of

from evaluator.dataset import VocDataset
from evaluator.metrics import BinaryCounts
from model import voc
from model.engine import Segmenter, get_config
from model.prompts import Box


def boxes_of(mask: np.ndarray, per_component: bool) -> list[tuple[Box, np.ndarray]]:
    if not per_component:
        ys, xs = np.nonzero(mask)
        return [(Box(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), mask)]
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    area = stats[1:, cv2.CC_STAT_AREA]
    out = []
    for i in range(1, n):
        if area[i - 1] >= 0.1 * area.max():
            x, y, w, h = stats[i, :4]
            out.append((Box(x, y, x + w, y + h), lab == i))
    return out


def main() -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    step = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    seg = Segmenter(get_config("featcut"))
    names = ["served"] + [f"{w} {p} {m}" for w in ("bbox", "comp") for p in ("prev", "noprev") for m in ("alone", "and")]
    counts = {n: {s: BinaryCounts.zeros() for s in SPLITS} for n in names}
    cpu: list[float] = []
    ds = VocDataset(VOC_ROOT)
    all_ids = ids()
    for k in range(0, len(all_ids), step):
        s = ds.load(all_ids[k])
        seg.set_image(s.image)
        tags = s.classes_present()
        valid = s.class_mask != 255
        for c in tags:
            served = seg.segment_class(c, others=tags).mask
            masks = {"served": served}
            t0 = time.process_time()
            for w in ("bbox", "comp"):
                for p in ("prev", "noprev"):
                    cut = np.zeros_like(served)
                    if served.any():
                        for box, part in boxes_of(served, w == "comp"):
                            cut |= seg.segment_box(box, c, previous=part if p == "prev" else None).mask
                    masks[f"{w} {p} alone"] = cut if cut.any() else served
                    masks[f"{w} {p} and"] = (cut & served) if (cut & served).any() else served
            cpu.append((time.process_time() - t0) / 4)
            t = voc.voc_index(c)
            for n in names:
                for sp in split_of(k, len(all_ids)):
                    counts[n][sp].add(t - 1, masks[n], s.class_mask == t, valid)
        if k % 20 == 0:
            print(k, s.image_id, flush=True)
    report(counts)
    for n in names:
        print(f"{n}: {per_class(counts[n]['all'], 1)}")
    print(f"box cuts CPU per tag and variant p50 {1000 * np.median(cpu):.1f} ms, p95 {1000 * np.percentile(cpu, 95):.1f} ms")


if __name__ == "__main__":
    main()
