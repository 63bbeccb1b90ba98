"""Test-time augmentation of the CAM: a horizontally flipped pass and a second scale, averaged.

    .venv/bin/python tools/experiments/tta.py [LIMIT]

Scores boxes (F PF 0.7) and tags (PF PB 0.3) of the `default` configuration as it is in this
commit, with the CNN output replaced by the average of: the plain pass; + its flipped pass;
+ a pass at 448 px resized to the 320 px map.
"""
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from evaluator.dataset import VocDataset  # noqa: E402
from evaluator.metrics import BinaryCounts  # noqa: E402
from model import voc  # noqa: E402
from model.engine import CnnOutput, Segmenter, get_config  # noqa: E402

ds = VocDataset(Path(__file__).resolve().parents[3] / "shared" / "voc2012" / "VOC2012")
limit = int(sys.argv[1]) if len(sys.argv) > 1 else 205
seg = Segmenter(get_config("default"))


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
