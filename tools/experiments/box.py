"""Box masks: F PF 0.7 at several GrabCut sizes, other techniques, and pixel votes between them.

    .venv/bin/python tools/experiments/box.py 205 2     # README ablation, step 11 (103 images, 311 boxes)

Every STEP-th of the first LIMIT train images of ../shared/voc2012; object mIoU (class-wise
binary IoU, evaluator.metrics.BinaryCounts) per variant. The engine settings are pinned here.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from evaluator.dataset import VocDataset
from evaluator.metrics import BinaryCounts
from model import voc
from model.engine import EngineConfig, Segmenter
from model.techniques import Technique as T

VOC = Path(__file__).resolve().parents[3] / "shared" / "voc2012" / "VOC2012"
BASE = EngineConfig(name="exp", cnn_max_side=320, cam_norm="box", crop_margin=0.05, grabcut_max_side=200,
                    class_grabcut_max_side=300, class_exclusive=True, box_technique=T("fpf", 0.7),
                    class_technique=T("pfpb", 0.3))
SIDES = {"gc200": 200, "gc160": 160, "gc128": 128, "gc100": 100}
CANDIDATES = {
    "fpf7@200": ("gc200", T("fpf", 0.7)), "fpf7@160": ("gc160", T("fpf", 0.7)),
    "fpf7@128": ("gc128", T("fpf", 0.7)), "fpf7@100": ("gc100", T("fpf", 0.7)),
    "gc@128": ("gc128", T("grabcut")), "fpf5@128": ("gc128", T("fpf", 0.5)), "fpf85@128": ("gc128", T("fpf", 0.85)),
    "cam1": ("gc128", T("cam", 0.1)), "cam3": ("gc128", T("cam", 0.3)), "fpb2@128": ("gc128", T("fpb", 0.2)),
}
VOTES = {  # a pixel is foreground where more than half of the members say so
    "vote(fpf7,gc,cam1)@128": ["fpf7@128", "gc@128", "cam1"],
    "vote(fpf5,fpf7,fpf85)@128": ["fpf5@128", "fpf7@128", "fpf85@128"],
    "vote(fpf7,gc,fpf5,cam3,fpb2)@128": ["fpf7@128", "gc@128", "fpf5@128", "cam3", "fpb2@128"],
    "vote(fpf7,gc,fpf5)@128": ["fpf7@128", "gc@128", "fpf5@128"],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("limit", type=int, help="first LIMIT train images")
    ap.add_argument("step", type=int, nargs="?", default=1, help="every STEP-th of them (default 1)")
    ap.add_argument("--voc", type=Path, default=VOC)
    args = ap.parse_args(argv)
    ds = VocDataset(args.voc)
    first = Segmenter(dataclasses.replace(BASE, grabcut_max_side=200))
    segs = {k: first if side == 200 else Segmenter(dataclasses.replace(BASE, grabcut_max_side=side), net=first.net)
            for k, side in SIDES.items()}
    counts = {k: BinaryCounts.zeros() for k in [*CANDIDATES, *VOTES]}
    ids = ds.ids("train")[:args.limit:args.step]
    t0, nobj = time.time(), 0
    for iid in ids:
        s = ds.load(iid)
        cnn = first.set_image(s.image)
        for sg in segs.values():
            if sg is not first:
                sg.set_image(s.image, cnn)
        for o in s.objects:
            ci, gt = voc.voc_index(o.name) - 1, s.object_mask == o.instance
            nobj += 1
            masks = {k: segs[sk].segment_box(o.box, o.name, t).mask for k, (sk, t) in CANDIDATES.items()}
            for k, m in masks.items():
                counts[k].add(ci, m, gt, s.valid)
            for k, members in VOTES.items():
                counts[k].add(ci, np.mean([masks[x] for x in members], axis=0) > 0.5, gt, s.valid)
    print(f"images {len(ids)} objects {nobj} {time.time() - t0:.0f}s")
    for k, c in counts.items():
        print(f"{k:36s} {100 * np.nanmean(c.iou()[c.seen]):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
