"""Test-time augmentation of the CAM: a horizontally flipped pass and a second scale, averaged.

    .venv/bin/python tools/experiments/tta.py [LIMIT]     # README ablation, step 16 (LIMIT 205)

Scores boxes (F PF 0.7) and tags (PF PB 0.3) of the `default` configuration as it was when this
ran (98886e8; pinned below), with the CNN output replaced by the average of: the plain pass;
+ its flipped pass; + a pass at 448 px resized to the 320 px map.
"""

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from evaluator.dataset import VocDataset
from evaluator.metrics import BinaryCounts
from model import voc
from model.engine import CnnOutput, EngineConfig, Segmenter
from model.techniques import Technique

# `default` at 98886e8, the commit whose figures the README quotes.
CONFIG = EngineConfig(name="default", cnn_max_side=320, cam_norm="box", crop_margin=0.05, grabcut_max_side=144,
                      class_grabcut_max_side=256, score_max_side=64, class_exclusive=True, class_window_margin=0.25,
                      box_technique=Technique("fpf", 0.7), class_technique=Technique("pfpb", 0.3))
ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("limit", type=int, nargs="?", default=205, help="first LIMIT train images (default 205)")
ap.add_argument("--voc", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "voc2012" / "VOC2012")
args = ap.parse_args()
ds = VocDataset(args.voc)
limit = args.limit
seg = Segmenter(CONFIG)


def flipped(img: np.ndarray) -> CnnOutput:
    out = seg.net.run(np.ascontiguousarray(img[:, ::-1]), 320)
    return CnnOutput(out.logits, np.ascontiguousarray(out.voc_cams[:, :, ::-1]))


def scaled(img: np.ndarray, shape: tuple[int, int]) -> CnnOutput:
    out = seg.net.run(img, 448)
    cams = np.stack([cv2.resize(c, (shape[1], shape[0]), interpolation=cv2.INTER_AREA) for c in out.voc_cams])
    return CnnOutput(out.logits, cams)


variants = ("plain", "flip", "flip+448")
counts = {(v, t): BinaryCounts.zeros() for v in variants for t in ("box", "tag")}
t0 = time.time()
for iid in ds.ids("train")[:limit]:
    s = ds.load(iid)
    base = seg.net.run(s.image, 320)
    outs = {"plain": [base], "flip": [base, flipped(s.image)]}
    outs["flip+448"] = outs["flip"] + [scaled(s.image, base.voc_cams.shape[1:])]
    for v in variants:
        cams = np.mean([o.voc_cams for o in outs[v]], axis=0).astype(np.float32)
        seg.set_image(s.image, CnnOutput(base.logits, cams))
        for o in s.objects:
            counts[(v, "box")].add(voc.voc_index(o.name) - 1, seg.segment_box(o.box, o.name).mask, s.object_mask == o.instance, s.valid)
        tags = s.classes_present()
        for c in tags:
            counts[(v, "tag")].add(voc.voc_index(c) - 1, seg.segment_class(c, others=tags).mask, s.class_mask == voc.voc_index(c), s.valid)
print(f"{limit} images, {time.time() - t0:.0f} s")
for (v, t), c in counts.items():
    print(f"{v:9s} {t}: mIoU {100 * np.nanmean(c.iou()[c.seen]):.1f}")
