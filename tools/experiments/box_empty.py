"""Issue 12 (boxes): which box answers does featcut's cut leave empty, and what should they be?

    .venv/bin/python tools/experiments/box_empty.py [--limit N]

Every VOC object's box through the featcut preset without its empty-box fallback
(``box_empty_fallback=None``); for each answer keeping under 5% of its box, its IoU with the
ground truth (void ignored) and that of the candidates: the box's CAM at 0.3 / 0.5 of its box
peak (0.5 is the served ``box_empty_fallback``), featcut re-cut with a weaker Potts term (λ 1)
or without the CAM-core first fit (``fit_fg_cam=None``), and ``default``'s GrabCut answer.
Masks served are never changed by this script.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from evaluator.clicks import iou
from evaluator.dataset import VocDataset
from model.config import get_config
from model.featcut import FeatCutCut
from model.segmenter import Segmenter
from tools.experiments.featcut_box import VOC_ROOT, make_params

SMALL = 0.05  # an answer keeping less of its box than this is listed
CAM_LEVELS = (0.3, 0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voc", default=str(VOC_ROOT))
    ap.add_argument("--limit", type=int, default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    ds = VocDataset(a.voc)
    seg = Segmenter(dataclasses.replace(get_config("featcut"), box_empty_fallback=None))
    plain = seg.cutter
    recuts = {"lam1": FeatCutCut(make_params({"lam": 1.0})), "nofit": FeatCutCut(make_params({"fit_fg_cam": None}))}
    grabcut = Segmenter(get_config("default"), net=seg.net)
    n = 0
    listed: list[dict[str, float]] = []
    for image_id in ds.ids("train")[: a.limit]:
        s = ds.load(image_id)
        seg.set_image(s.image)
        grabcut_set = False
        for o in s.objects:
            n += 1
            gt = s.object_mask == o.instance
            x0, y0, x1, y1 = o.box.clip(s.image.shape[1], s.image.shape[0])
            frac = seg.segment_box(o.box, o.name).mask.sum() / max(1, (x1 - x0) * (y1 - y0))
            if frac >= SMALL:
                continue
            row = {"kept": float(frac)}
            cam, _ = seg.class_cam(o.name, (x0, y0, x1, y1))
            box_cam = cam[y0:y1, x0:x1]
            for level in CAM_LEVELS:
                m = np.zeros_like(gt)
                m[y0:y1, x0:x1] = box_cam >= level * float(box_cam.max())
                row[f"cam{level}"] = iou(m, gt, s.valid)
            for name, cutter in recuts.items():
                seg.cutter = cutter
                row[name] = iou(seg.segment_box(o.box, o.name).mask, gt, s.valid)
            seg.cutter = plain
            if not grabcut_set:
                grabcut.set_image(s.image, seg.cnn)
                grabcut_set = True
            row["default"] = iou(grabcut.segment_box(o.box, o.name).mask, gt, s.valid)
            listed.append(row)
            print(image_id, o.instance, o.name, " ".join(f"{k} {v:.2f}" for k, v in row.items()), flush=True)
    print(f"{n} objects, {sum(r['kept'] == 0 for r in listed)} empty, {len(listed)} under {SMALL:.0%} of their box")
    if listed:
        print("mean IoU of the listed:", " ".join(f"{k} {np.mean([r[k] for r in listed]):.3f}" for k in listed[0] if k != "kept"))


if __name__ == "__main__":
    main()
