"""The tag method (model/tagprop.py) and its ablation on the cached VOC records, both halves.

    .venv/bin/python tools/experiments/tags_cache.py             # once: CNN outputs + today's masks
    .venv/bin/python tools/experiments/tags_prop.py [STEP] [NAMES]  # STEP 2: even images only

Prints class-wise binary mIoU (evaluator.metrics, formulas 4-8) on all 205 sorted ids and on
the halves A / B (first / second) and E / O (even / odd positions), and the per-image time of
the tag path (after the CNN) for each variant.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import cv2
import numpy as np
import torch
from tags_common import ROOT, Rec, evaluate, report

sys.path.insert(0, str(ROOT))
import tags_cut

from model.features import reduce_layer
from model.tagprop import TagParams, gate, propagated_shares
from model.voc import VOC_CLASSES

BASE = TagParams()  # the kept method
CUT = tags_cut.TagParams(radius=4)  # label map + per-image models + Potts alpha-expansion (dropped)
# name -> (params, how): "gate" = model/tagprop.py's gate of today's masks; "map" = the argmax of
# the propagated shares alone; "cut..." = tags_cut's multi-label cut; None = today's masks.
VARIANTS: dict[str, tuple[object, str]] = {
    "today (default)": (None, "gate"),
    "tagprop (kept): keep 0.3, add 0.5": (BASE, "gate"),
    "- propagation (steps 0)": (dataclasses.replace(BASE, steps=0), "gate"),
    "- add (keep only)": (dataclasses.replace(BASE, add=1.01), "gate"),
    "- keep (add only)": (dataclasses.replace(BASE, keep=0.0), "gate"),
    "keep 0.2": (dataclasses.replace(BASE, keep=0.2), "gate"),
    "keep 0.4": (dataclasses.replace(BASE, keep=0.4), "gate"),
    "add 0.4": (dataclasses.replace(BASE, add=0.4), "gate"),
    "add 0.6": (dataclasses.replace(BASE, add=0.6), "gate"),
    "radius 6": (dataclasses.replace(BASE, radius=6), "gate"),
    "alpha 2": (dataclasses.replace(BASE, alpha=2.0), "gate"),
    "alpha 8": (dataclasses.replace(BASE, alpha=8.0), "gate"),
    "label map alone (argmax of shares)": (BASE, "map"),
    "label map alone, no propagation": (dataclasses.replace(BASE, steps=0), "map"),
    "cut: label map + Potts": (dataclasses.replace(CUT, model_weight=0.0), "cut"),
    "cut: label map + models + Potts": (CUT, "cut"),
}
TIMES: dict[str, list[float]] = {}


def run(name: str, params: object, how: str):
    def fn(rec: Rec) -> np.ndarray:
        if params is None:
            return rec.base
        t0 = time.perf_counter()
        cams = rec.voc_cams[[t - 1 for t in rec.tags]]
        H, W = rec.gt.shape
        if how == "cut":
            pf = [reduce_layer(f) for f in (rec.f3, rec.f5, rec.f9)] if params.model_weight > 0 else None  # type: ignore[attr-defined]
            lab = tags_cut.segment_tags(rec.small, rec.small.shape[:2], cams, [rec.f3, rec.f5], pf, params)  # type: ignore[arg-type]
            lab = cv2.resize(lab.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST)
            out = np.stack([lab == k + 1 for k in range(len(rec.tags))])
        else:
            share = propagated_shares(rec.small.shape[:2], cams, [rec.f3, rec.f5], (H, W), params)  # type: ignore[arg-type]
            if how == "gate":
                out = gate(rec.base, share, params)  # type: ignore[arg-type]
            else:
                lab = share.argmax(0)
                out = np.stack([lab == k + 1 for k in range(len(rec.tags))])
        TIMES.setdefault(name, []).append(time.perf_counter() - t0)
        return out

    return fn


def main() -> None:
    torch.set_num_threads(1)
    step = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    names = [n for n in VARIANTS if len(sys.argv) <= 2 or any(k in n for k in sys.argv[2].split(","))]
    counts = evaluate({n: run(n, *VARIANTS[n]) for n in names}, step=step)
    report(counts)
    print("per class IoU (all), predicted / true area:")
    for n, by in counts.items():
        b = by["all"]
        iou = b.iou()
        ratio = (b.tp + b.fp) / np.maximum(b.tp + b.fn, 1)
        cells = [f"{VOC_CLASSES[i][:6]} {100 * iou[i]:.0f} ({ratio[i]:.1f})" for i in range(20) if b.seen[i]]
        print(f"{n}: " + ", ".join(cells))
    for n, t in TIMES.items():
        print(f"{n:40s} p50 {1000 * np.median(t):.0f} ms per image (tag path after the CNN and today's masks, 1 thread)")


if __name__ == "__main__":
    main()
