"""Issue 12 session 9: what ranks featcut's tag masks? Spearman rho with the true IoU of the
candidate scores of every tag (the ground-truth classes present) on the VOC images, all and
halves A / B (even / odd position in the split list).

    .venv/bin/python tools/experiments/tag_score.py [--limit N] [--voc DIR]

Candidates: the mean CAM in the mask (the score served until session 9), the re-cut's confidence
(model.cut.CutReport), the re-cut's and the gated mask's agreement with the served mask, the CNN's
class probability, the mean / peak share of the tag's propagated CAM (``support``: over the served
mask), the mask's area, the raw CAM's peak; and the served score (model/results.py
tag_support_score: the support averaged with the probability).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from evaluator.dataset import VocDataset
from model import voc
from model.config import get_config
from model.results import cam_score, mask_iou
from model.segmenter import Segmenter

NAMES = (
    "served",
    "mean CAM",
    "confidence",
    "recut_agree",
    "gated_agree",
    "probability",
    "support",
    "share_peak",
    "area",
    "raw_peak",
)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voc", default=os.environ.get("CAMCUT_VOC", "../shared/voc2012/VOC2012"))
    ap.add_argument("--limit", type=int, default=None)
    a = ap.parse_args(argv)
    ds = VocDataset(a.voc)
    seg = Segmenter(get_config("featcut"))
    tp = seg._tagprop
    assert tp is not None
    rows: list[tuple[int, float, list[float]]] = []
    for k, image_id in enumerate(ds.ids("train")[: a.limit]):
        s = ds.load(image_id)
        seg.set_image(s.image)
        tags = s.classes_present()
        prob = {c.voc_class: c.probability for c in seg.class_probabilities()}
        for c in tags:
            rivals = tuple(o for o in tags if o != c)
            first = seg._segment_class_cam(c, None, False, rivals)
            if first.fallback == "no_cam":
                continue
            gated = tp.gate(seg, c, first.mask, rivals, cut_ran=first.fallback is None)
            served = seg.segment_class(c, others=tags)
            key, share = tp.shares(seg, (c, *rivals))
            sh = share[key.index(c) + 1]
            m = served.mask
            iou = mask_iou(m & s.valid, (s.class_mask == voc.voc_index(c)) & s.valid)
            feats = [
                served.score,
                cam_score(m, seg.class_cam(c)[0]),
                np.nan if served.confidence is None else served.confidence,
                mask_iou(m, gated),
                mask_iou(m, first.mask),
                prob.get(c, 0.0),
                tp.support(seg, c, m, rivals),
                float(sh.max()),
                float(m.mean()),
                float(seg.raw_class_cam(c).max()),
            ]
            rows.append((k % 2, iou, feats))
    half = np.array([r[0] for r in rows])
    iou = np.array([r[1] for r in rows])
    f = np.array([r[2] for r in rows], np.float64)
    print(f"{len(rows)} tags with a CAM")
    for j, name in enumerate(NAMES):
        ok = ~np.isnan(f[:, j])
        cells = [spearmanr(f[ok & sel, j], iou[ok & sel]).statistic for sel in (half >= 0, half == 0, half == 1)]
        print(f"{name:12s} rho all {cells[0]:+.3f}  A {cells[1]:+.3f}  B {cells[2]:+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
