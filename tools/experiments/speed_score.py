"""Issue 12 (speed): cheaper second opinions for the box score, and what they do to its ranking.

    .venv/bin/python tools/experiments/speed_score.py [--limit N] [--json FILE]

For every object of the split (205 shared images, 579 boxes): the served featcut box answer (its
mask and the cut's confidence, computed once; no variant changes them), then each variant's second
opinion (the featcut core on the box at ``score_max_side`` px, its GMMs fitted with
``score_gmm_iterations`` EM rounds), the score the engine sends (model.results.agreement_score:
agreement averaged with the confidence), its Spearman rho with the true IoU on all boxes and on
halves A / B (even / odd position in the split list) with a paired bootstrap s.e. against the first
variant, and the second opinion's CPU time (process_time, one torch thread, in this one run).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from evaluator.dataset import VocDataset
from model.config import get_config
from model.results import agreement_score, mask_iou
from model.segmenter import Segmenter
from model.techniques import Technique

VOC = Path(__file__).resolve().parents[3] / "shared" / "voc2012" / "VOC2012"
# name: (score_max_side, score_gmm_iterations); the first is the reference of the paired s.e.
VARIANTS = {
    "s64": (64, None),  # session 8's second opinion
    "s32_em0": (32, 0),
    "s32_em1": (32, 1),
    "s48_em0": (48, 0),  # served since session 9
    "s48_em1": (48, 1),
    "s64_em0": (64, 0),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--voc", type=Path, default=VOC)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    ds = VocDataset(a.voc)
    ids = ds.ids("train")[: a.limit]
    segs: dict[str, Segmenter] = {}
    for name, (side, rounds) in VARIANTS.items():
        net = next(iter(segs.values())).net if segs else None
        seg = Segmenter(dataclasses.replace(get_config("featcut"), score_max_side=side), net=net)
        seg.cutter.core.p = dataclasses.replace(seg.cutter.core.p, score_gmm_iterations=rounds)  # type: ignore[attr-defined]
        segs[name] = seg
    first = next(iter(segs.values()))
    rows: list[dict[str, Any]] = []
    cpu = dict.fromkeys(VARIANTS, 0.0)
    for pos, image_id in enumerate(ids):
        s = ds.load(image_id)
        cnn = first.set_image(s.image)
        for seg in segs.values():
            if seg is not first:
                seg.set_image(s.image, cnn=cnn)
        for obj in s.objects:
            res = first.segment_box(obj.box, obj.name)
            truth = (s.object_mask == obj.instance) & s.valid
            row = {"pos": pos, "id": image_id, "iou": mask_iou(res.mask & s.valid, truth), "conf": res.confidence}
            for name, seg in segs.items():
                t = time.process_time()
                alt = seg._segment_box(obj.box, obj.name, Technique("grabcut"), None, score=True)
                cpu[name] += time.process_time() - t
                row[name] = mask_iou(res.mask, alt.mask)
            rows.append(row)
    if a.json:
        a.json.write_text(json.dumps({"rows": rows, "cpu_s": cpu}))
    rng = np.random.default_rng(0)
    ref = next(iter(VARIANTS))
    print(f"{len(rows)} boxes of {len(ids)} images; rho(score sent, IoU) [paired bootstrap s.e. vs {ref}]")
    for name in VARIANTS:
        parts = []
        for label, half in (("all", None), ("A", 0), ("B", 1)):
            rr = [r for r in rows if half is None or r["pos"] % 2 == half]
            iou = np.array([r["iou"] for r in rr])
            sc = np.array([agreement_score(r[name], r["conf"]) for r in rr])
            base = np.array([agreement_score(r[ref], r["conf"]) for r in rr])
            rho = spearmanr(sc, iou)[0]
            boot = [rng.integers(0, len(rr), len(rr)) for _ in range(200)]
            se = np.std([spearmanr(sc[i], iou[i])[0] - spearmanr(base[i], iou[i])[0] for i in boot])
            parts.append(f"{label} {rho:.3f} ({rho - spearmanr(base, iou)[0]:+.3f} se {se:.3f})")
        print(f"{name:8} " + " | ".join(parts) + f" | second opinion CPU {1000 * cpu[name] / len(rows):.1f} ms/box")


if __name__ == "__main__":
    main()
