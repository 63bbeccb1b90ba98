"""Where tag masks fail: false-positive share of the error, predicted vs true share of the image.

    .venv/bin/python tools/experiments/tagdiag.py     # README "What we learned" (103 images, 300 px)

Every STEP-th of the first LIMIT train images of ../shared/voc2012; PF PB 0.3 at GrabCut
300 px, each tag on its own on the whole image (before class_exclusive and the tag window).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from evaluator.dataset import VocDataset
from model import voc
from model.engine import EngineConfig, Segmenter, mask_iou
from model.techniques import Technique as T

VOC = Path(__file__).resolve().parents[3] / "shared" / "voc2012" / "VOC2012"
CONFIG = dataclasses.replace(EngineConfig(name="exp", cnn_max_side=320, cam_norm="box", crop_margin=0.05, grabcut_max_side=200,
                                          box_technique=T("fpf", 0.7), class_technique=T("pfpb", 0.3)), class_grabcut_max_side=300)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=205, help="first LIMIT train images (default 205)")
    ap.add_argument("--step", type=int, default=2, help="every STEP-th of them (default 2)")
    ap.add_argument("--voc", type=Path, default=VOC)
    args = ap.parse_args(argv)
    ds = VocDataset(args.voc)
    seg = Segmenter(CONFIG)
    tp = fp = fn = 0
    rows = []
    for iid in ds.ids("train")[:args.limit:args.step]:
        s = ds.load(iid)
        seg.set_image(s.image)
        v = s.valid
        for c in s.classes_present():
            gt = (s.class_mask == voc.voc_index(c)) & v
            m = seg.segment_class(c).mask & v
            cam = seg.segment_class(c, T("cam", 0.3)).mask & v
            tp += (m & gt).sum()
            fp += (m & ~gt).sum()
            fn += (~m & gt).sum()
            rows.append((mask_iou(m, gt), mask_iou(cam, gt), gt.mean(), m.mean(), len(s.classes_present())))
    print("TP %d FP %d FN %d  -> FP share %.2f" % (tp, fp, fn, fp / (fp + fn)))
    a = np.array(rows)
    print("mean IoU gc %.3f cam %.3f; gt frac %.2f pred frac %.2f" % tuple(a[:, :4].mean(0)))
    print("IoU hist", np.histogram(a[:, 0], bins=[0, 0.1, 0.2, 0.4, 0.6, 0.8, 1.01])[0])
    print("single-class images IoU %.3f, multi %.3f" % (a[a[:, 4] == 1, 0].mean(), a[a[:, 4] > 1, 0].mean()))
    print("empty preds", (a[:, 3] == 0).sum(), "pred > 2x gt", (a[:, 3] > 2 * a[:, 2]).sum(), "pred < 0.5 gt", (a[:, 3] < 0.5 * a[:, 2]).sum())
    return 0


if __name__ == "__main__":
    sys.exit(main())
