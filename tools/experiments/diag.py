"""Where box masks fail: IoU histogram, predicted vs true share of the box, classes of the worst.

    .venv/bin/python tools/experiments/diag.py     # README "What we learned" (103 images, 311 boxes, 128 px)

Every STEP-th of the first LIMIT train images of ../shared/voc2012, F PF 0.7 at GrabCut 128 px.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from evaluator.dataset import VocDataset
from model.engine import EngineConfig, Segmenter, mask_iou
from model.techniques import Technique as T

VOC = Path(__file__).resolve().parents[3] / "shared" / "voc2012" / "VOC2012"
CONFIG = dataclasses.replace(EngineConfig(name="exp", cnn_max_side=320, cam_norm="box", crop_margin=0.05, grabcut_max_side=200,
                                          box_technique=T("fpf", 0.7), class_technique=T("pfpb", 0.3)), grabcut_max_side=128)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=205, help="first LIMIT train images (default 205)")
    ap.add_argument("--step", type=int, default=2, help="every STEP-th of them (default 2)")
    ap.add_argument("--voc", type=Path, default=VOC)
    args = ap.parse_args(argv)
    ds = VocDataset(args.voc)
    seg = Segmenter(CONFIG)
    rows, names = [], []
    for iid in ds.ids("train")[:args.limit:args.step]:
        s = ds.load(iid)
        seg.set_image(s.image)
        v = s.valid
        for o in s.objects:
            gt = (s.object_mask == o.instance) & v
            h, w = gt.shape
            x0, y0, x1, y1 = o.box.clip(w, h)
            boxm = np.zeros_like(gt)
            boxm[y0:y1, x0:x1] = 1
            ious = [mask_iou(seg.segment_box(o.box, o.name, t).mask & v, gt) for t in (T("fpf", 0.7), T("grabcut"), T("cam", 0.1))]
            m = seg.segment_box(o.box, o.name, T("fpf", 0.7)).mask
            rows.append([*ious, mask_iou(boxm & v, gt), gt[y0:y1, x0:x1].mean(), m[y0:y1, x0:x1].mean(), (x1 - x0) * (y1 - y0) / (h * w)])
            names.append(o.name)
    a = np.array(rows, float)
    print("mean obj IoU fpf7 %.3f gc %.3f cam %.3f box %.3f oracle3 %.3f" % (*a[:, :4].mean(0), a[:, :3].max(1).mean()))
    print("fpf7 IoU hist", np.histogram(a[:, 0], bins=[0, 0.2, 0.4, 0.6, 0.8, 0.9, 1.01])[0])
    print("gt fill of box: mean %.2f" % a[:, 4].mean(), "pred fill mean %.2f" % a[:, 5].mean())
    bad = a[:, 0] < 0.4
    print("bad n", bad.sum(), "pred fill of bad %.2f gt fill %.2f boxfrac %.2f" % (a[bad, 5].mean(), a[bad, 4].mean(), a[bad, 6].mean()))
    print("under-seg (pred fill < gt fill*0.6):", (a[:, 5] < 0.6 * a[:, 4]).sum(), " over (pred>1.4gt):", (a[:, 5] > 1.4 * a[:, 4]).sum())
    print(collections.Counter(n for n, b in zip(names, bad, strict=True) if b))
    print("corr pred fill vs gt fill %.2f" % np.corrcoef(a[:, 5], a[:, 4])[0, 1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
