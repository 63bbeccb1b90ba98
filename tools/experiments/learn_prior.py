"""Throwaway: the shape prior vs the MLP head, judged fast on grid pixels (README learning section).

Collects every object of the split as a correction sample once (evaluator/learn.py
``correction_samples``, cached as arrays in --cache), then for each half as teacher and the other
as scored set, after N corrections: fit_heads' candidates (prior only; MLP + prior; MLP alone),
each scored on the other half's samples by model/head.py ``heldout_iou`` (the served mask
estimated on grid pixels: the core's cut flipped where the head's unary disagrees), as the mean
object IoU gain over the training-free answer. Only a screen: the real figures are
``python -m evaluator.learn`` (full cuts).

    nice -n 15 python tools/experiments/learn_prior.py --voc ../shared/voc2012/VOC2012
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from model.head import ObjectSample, fit_head, fit_heads, heldout_iou, prior_head


def collect(voc: str, limit: int | None) -> list[ObjectSample]:
    from evaluator.dataset import VocDataset
    from model.engine import Segmenter, get_config
    from model.head import HeadSet, correction_sample

    seg = Segmenter(get_config("featcut"))
    ds = VocDataset(voc)
    out: list[ObjectSample] = []
    for i, image_id in enumerate(ds.ids("train")[:limit]):
        sample = ds.load(image_id)
        seg.heads = HeadSet()
        seg.set_image(sample.image)
        for obj in sample.objects:  # as evaluator/learn.py correction_samples, without the second opinion
            gt = sample.object_mask == obj.instance
            s = correction_sample(seg, obj.box, obj.name, gt, sample.object_mask != 255, agreement=False) if gt.any() else None
            if s is not None:
                s.group = image_id
                out.append(s)
        if i % 20 == 0:
            print(f"  {i} images, {len(out)} objects", flush=True)
    return out


def save(path: Path, samples: list[ObjectSample]) -> None:
    a: dict[str, np.ndarray] = {}
    for i, s in enumerate(samples):
        a[f"x{i}"], a[f"y{i}"], a[f"uv{i}"], a[f"shape{i}"] = s.x, s.y, s.uv, s.shape  # type: ignore[assignment]
    a["meta_cls"] = np.array([s.voc_class for s in samples], np.str_)
    a["meta_group"] = np.array([s.group for s in samples], np.str_)
    a["meta_num"] = np.array([[s.agreement, s.core_iou] for s in samples], np.float64)
    np.savez(path, allow_pickle=False, **a)


def load(path: Path) -> list[ObjectSample]:
    with np.load(path, allow_pickle=False) as z:
        n = len(z["meta_cls"])
        return [
            ObjectSample(
                str(z["meta_cls"][i]),
                z[f"x{i}"],
                z[f"y{i}"],
                float(z["meta_num"][i, 0]),
                float(z["meta_num"][i, 1]),
                z[f"uv{i}"],
                z[f"shape{i}"],
                str(z["meta_group"][i]),
            )  # fmt: skip
            for i in range(n)
        ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voc", default="../shared/voc2012/VOC2012")
    ap.add_argument("--cache", default="runs/learn_prior_samples.npz")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--points", default="25,50,100,200")
    ap.add_argument("--what", default="prior,mlp", help="prior, mlp (MLP alone and MLP + prior), gated (fit_heads' kept set)")
    a = ap.parse_args()
    cache = Path(a.cache)
    if cache.exists():
        samples = load(cache)
    else:
        cache.parent.mkdir(parents=True, exist_ok=True)
        samples = collect(a.voc, a.limit)
        save(cache, samples)
    groups = list(dict.fromkeys(s.group for s in samples))
    half = {g: i % 2 for i, g in enumerate(groups)}
    sets = [[s for s in samples if half[s.group] == h] for h in (0, 1)]
    for name, teach, score in (("A->B", sets[0], sets[1]), ("B->A", sets[1], sets[0])):
        base = heldout_iou(None, score)
        print(f"{name}: {len(teach)} teach, {len(score)} scored, training-free grid IoU {base:.4f}")
        for n in [int(p) for p in a.points.split(",")]:
            part = teach[:n]
            t0 = time.process_time()
            ph = prior_head(part)
            tp = time.process_time() - t0
            row = f"  n={n:4d}  prior {heldout_iou(ph, score) - base:+.4f} (w {ph.shape_w:.2f}, {tp:.1f} s)"
            if "gated" in a.what:
                rep = fit_heads(part, min_objects=0)
                hs = rep.heads
                gain = float(np.mean([heldout_iou(hs.get(s.voc_class, hs.get("")), [s]) for s in score])) - base
                row += f"  gated {gain:+.4f} ({'kept ' + rep.kind if rep.accepted else 'none'}, {rep.seconds:.1f} s)"
            if n >= 50 and "mlp" in a.what:
                t0 = time.process_time()
                mh = fit_head(part, shape=False)
                row += f"  mlp {heldout_iou(mh, score) - base:+.4f}"
                mh2 = fit_head(part)
                row += f"  mlp+prior {heldout_iou(mh2, score) - base:+.4f} ({time.process_time() - t0:.1f} s both)"
            print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
