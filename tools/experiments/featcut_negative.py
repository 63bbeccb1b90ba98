"""A negative click alone on a featcut box mask: the featcut answer vs the GrabCut one (model/refine.py).

    .venv/bin/python tools/experiments/featcut_negative.py START END [--voc DIR]   # images START..END-1 of the train list

For every object whose simulated first click (evaluator.clicks.next_click) on its featcut box mask
is negative, that click alone goes to ``subtract_negatives``: once through the featcut core, once
through the GrabCut seed cut (the path before featcut answered it). Prints IoU before / GrabCut / featcut.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from evaluator.clicks import iou, next_click
from evaluator.dataset import VocDataset
from model import Seeds, Segmenter, refine
from model.config import get_config

VOC_ROOT = str(Path(__file__).resolve().parents[3] / "shared" / "voc2012" / "VOC2012")  # ../shared


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("start", type=int)
    ap.add_argument("end", type=int)
    ap.add_argument("--voc", default=VOC_ROOT)
    a = ap.parse_args()
    torch.set_num_threads(1)
    ds = VocDataset(a.voc)
    seg = Segmenter(get_config("featcut"))
    rows = []
    for image_id in ds.ids("train")[a.start : a.end]:
        s = ds.load(image_id)
        seg.set_image(s.image)
        for o in s.objects:
            gt, valid = s.object_mask == o.instance, s.object_mask != 255
            if not gt.any():
                continue
            m = seg.segment_box(o.box, o.name).mask
            c = next_click(m, gt, valid)
            if c is None or c[2]:
                continue
            seeds = Seeds((), ((float(c[0]), float(c[1])),))
            new, _ = refine.subtract_negatives(seg, m, seeds, o.name, seg.config.class_technique)
            seg._needs_features = False  # the GrabCut path of the same call
            old, _ = refine.subtract_negatives(seg, m, seeds, o.name, seg.config.class_technique)
            seg._needs_features = True
            rows.append((iou(m, gt, valid), iou(old, gt, valid), iou(new, gt, valid)))
    means = np.array(rows).mean(axis=0) if rows else np.full(3, np.nan)
    print(f"{len(rows)} objects; mean IoU before / GrabCut / featcut: {' / '.join(f'{v:.3f}' for v in means)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
