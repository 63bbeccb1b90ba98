"""The learning-curve task: how the per-project head (model/head.py) improves with corrections.

``python -m evaluator.learn --voc DIR --split SPLIT --halves`` (learn from one half of the split,
score the other, both ways) or ``--learn-from ROOT:SPLIT`` (one VOCdevkit set teaches, ``--voc``
``--split`` is scored).

Protocol: the teaching set's images are fed one by one, in split order, as corrected
annotations: each object's ground-truth mask (SegmentationObject) stands in for the annotator's
correction of the engine's box answer. After 0, 25, 50, 100, 200, ... corrected objects the head
set is re-fitted exactly as the backend re-fits it (model/head.py ``fit_heads``: fit on all but
the most recent corrections, kept only if it beats the current head on them), and the scored set
is segmented from its XML boxes through the engine call the backend makes
(``Segmenter.segment_box(..., agreement=True)`` with ``Segmenter.heads`` set). Reported per
point: box mIoU (the report's class-wise binary mIoU, F PF of the configuration), the score's
Spearman rho with the true IoU, NoC@85 / NoC@90 from a box (evaluator/clicks.py's simulator)
on every ``--noc-every``-th object, whether the gate accepted the head, the re-fit's CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from scipy.stats import spearmanr

from model import voc
from model.engine import Segmenter, get_config
from model.head import MIN_OBJECTS, FitReport, Head, HeadSet, ObjectSample, correction_sample, fit_heads
from model.results import mask_iou

from .clicks import run_object, summarise
from .dataset import VocDataset, VocSample
from .metrics import BinaryCounts

POINTS = (0, 25, 50, 100, 200)

_W: dict = {}


def _init(config: str, pool: bool) -> None:
    if pool:
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
    _W["seg"] = Segmenter(get_config(config))
    _W["ds"] = {}


def _dataset(root: str) -> VocDataset:
    if root not in _W["ds"]:
        _W["ds"][root] = VocDataset(root)
    return _W["ds"][root]


def correction_samples(seg: Segmenter, sample: VocSample) -> list[ObjectSample]:
    """Every object of an image as a correction (its GT mask), the way the backend collects one:
    the training-free answer's pixels and the corrected mask there (model/head.py ``Hook``)."""
    seg.heads = HeadSet()  # record only: the answer is the training-free one
    seg.set_image(sample.image)
    valid = sample.object_mask != 255
    out = []
    for obj in sample.objects:
        gt = sample.object_mask == obj.instance
        if gt.any():
            s = correction_sample(seg, obj.box, obj.name, gt, valid)
            if s is not None:  # None: a fallback (tiny box, no background), nothing the head would see
                s.group = sample.image_id  # one image = one annotation: the gate holds out whole images
                out.append(s)
    return out


def _collect(job: tuple[str, str]) -> list[ObjectSample]:
    root, image_id = job
    return correction_samples(_W["seg"], _dataset(root).load(image_id))


def _score(job: tuple[str, str, dict[str, dict[str, np.ndarray]] | None, bool]) -> dict[str, Any]:
    """One image of the scored set under one head set: binary counts, (IoU, score) per object, clicks."""
    root, image_id, arrays, clicks = job
    seg: Segmenter = _W["seg"]
    seg.heads = None if arrays is None else HeadSet({k: Head.from_arrays(v) for k, v in arrays.items()})
    sample = _dataset(root).load(image_id)
    seg.set_image(sample.image)
    counts = BinaryCounts.zeros()
    valid = sample.valid
    pairs = []
    order = sorted(sample.objects, key=lambda o: -(o.box.x1 - o.box.x0) * (o.box.y1 - o.box.y0))
    for obj in order:
        r = seg.segment_box(obj.box, obj.name, agreement=True)
        gt = sample.object_mask == obj.instance
        counts.add(voc.voc_index(obj.name) - 1, r.mask, gt, valid)
        if gt.any():
            pairs.append((mask_iou(r.mask & (sample.object_mask != 255), gt), float(r.score)))
    runs = []
    if clicks:
        for obj in sample.objects:
            if np.any(sample.object_mask == obj.instance):
                runs.append(run_object(seg, sample, obj, 0, "box", 20, 0.90))
    return {"counts": counts, "pairs": pairs, "runs": runs}


def _pool(config: str, workers: int) -> Any:
    if workers <= 1:
        _init(config, False)
        return None
    return get_context("spawn").Pool(workers, initializer=_init, initargs=(config, True))


def _map(pool: Any, fn: Any, jobs: list) -> list:
    return list(map(fn, jobs)) if pool is None else pool.map(fn, jobs, chunksize=1)


def curve(
    pool: Any,
    learn: tuple[str, list[str]],
    score: tuple[str, list[str]],
    points: list[int],
    noc_every: int,
    noc_points: tuple[int, ...] = (0, 200),
    min_objects: int = MIN_OBJECTS,
) -> list[dict[str, Any]]:
    """One direction: teach from ``learn`` (root, ids), score ``score`` after each point
    (``min_objects``: corrected objects before a head may be kept, as CAMCUT_HEAD_MIN_CORRECTIONS)."""
    t0 = time.perf_counter()
    samples = [s for ss in _map(pool, _collect, [(learn[0], i) for i in learn[1]]) for s in ss]
    print(f"  {len(samples)} corrections collected in {time.perf_counter() - t0:.0f} s", flush=True)
    click_ids = set(score[1][::noc_every]) if noc_every > 0 else set()
    rows: list[dict[str, Any]] = []
    heads: dict[str, Head] = {}
    cache: dict[tuple[int, bool], dict[str, Any]] = {}
    for n in sorted({min(p, len(samples)) for p in points}):
        rep: FitReport | None = None
        if n > 0:
            # One torch thread for the fit, as the workers: the target is "30 s of one core", and two
            # threads of a busy machine spin-wait past the MLP's CPU budget (model/head.py _fit_mlp).
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                rep = fit_heads(samples[:n], heads, min_objects=min_objects)
            finally:
                torch.set_num_threads(threads)
            heads = rep.heads
        key = (id(heads.get("")) if heads else 0, n in noc_points)
        if key not in cache:
            arrays = {k: h.to_arrays() for k, h in heads.items()} or None
            jobs = [(score[0], i, arrays, i in click_ids and n in noc_points) for i in score[1]]
            parts = _map(pool, _score, jobs)
            counts = BinaryCounts.zeros()
            for p in parts:
                counts += p["counts"]
            pairs = np.array([q for p in parts for q in p["pairs"]])
            runs = [r for p in parts for r in p["runs"]]
            clicks = summarise(runs, 20) if runs else {"objects": 0}
            cache[key] = {
                "box_miou": round(100 * counts.summary()["mIoU"], 2),
                "mean_iou": round(float(pairs[:, 0].mean()), 4),
                "spearman": round(float(spearmanr(pairs[:, 0], pairs[:, 1]).statistic), 3),
                "noc85": clicks.get("noc@85"),
                "noc90": clicks.get("noc@90"),
                "noc_objects": clicks["objects"],
            }
        row = {"corrections": n, **cache[key]}
        if rep is not None:
            row.update(accepted=rep.accepted, holdout=rep.holdout, heldout_new=round(rep.new_iou, 4),
                       heldout_old=round(rep.old_iou, 4), fit_cpu_s=round(rep.seconds, 1), heads=list(rep.classes),
                       kind=rep.kind)  # fmt: skip
        rows.append(row)
        print("  " + json.dumps(row), flush=True)
    return rows


def table(name: str, rows: list[dict[str, Any]]) -> str:
    out = [
        f"**{name}**\n",
        "| corrections | box mIoU | Δ | mean IoU | Spearman ρ | NoC@85 | NoC@90 | head kept | re-fit CPU s |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    base = rows[0]["box_miou"]
    for r in rows:
        # new / old: whether this fit replaced the head set; its kind: prior, mlp, or score (the score alone)
        kept = "" if r["corrections"] == 0 else (f"new ({r.get('kind')})" if r.get("accepted") else "old")
        out.append(
            f"| {r['corrections']} | {r['box_miou']:.2f} | {r['box_miou'] - base:+.2f} | {r['mean_iou']:.3f} "
            f"| {r['spearman']:.3f} | {r['noc85'] if r['noc85'] is not None else '-'} "
            f"| {r['noc90'] if r['noc90'] is not None else '-'} | {kept} | {r.get('fit_cpu_s', '')} |"
        )
    return "\n".join(out)


def plot(curves: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in curves.items():
        xs = [r["corrections"] for r in rows]
        axes[0].plot(xs, [r["box_miou"] for r in rows], marker="o", label=name)
        axes[1].plot(xs, [r["spearman"] for r in rows], marker="o", label=name)
    for ax, lab in zip(axes, ("box mIoU", "score Spearman ρ"), strict=True):
        ax.set_xlabel("corrected objects")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evaluator.learn", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--voc", default=os.environ.get("CAMCUT_VOC", "../shared/voc2012/VOC2012"))
    ap.add_argument("--split", default="train")
    ap.add_argument("--learn-from", default=None, help="ROOT:SPLIT of the teaching set")
    ap.add_argument("--halves", action="store_true", help="teach from one half of --split, score the other, both ways")
    ap.add_argument("--config", default="featcut")
    ap.add_argument("--points", default="0,25,50,100,200,all")
    ap.add_argument("--noc-every", type=int, default=3, help="NoC on every k-th scored image (0: none)")
    ap.add_argument("--noc-points", default="0,200", help="curve points where NoC is measured (it costs 20 cuts an object)")
    ap.add_argument(
        "--min-objects", type=int, default=MIN_OBJECTS, help="corrections before a head may be kept (the backend's rule)"
    )
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default="runs/learn")
    a = ap.parse_args(argv)
    ids = VocDataset(a.voc).ids(a.split)[: a.limit]
    if a.halves:
        even, odd = ids[0::2], ids[1::2]
        directions = {"learn A → score B": ((a.voc, even), (a.voc, odd)), "learn B → score A": ((a.voc, odd), (a.voc, even))}
    elif a.learn_from:
        root, _, split = a.learn_from.rpartition(":")
        directions = {f"learn {split} → score {a.split}": ((root, VocDataset(root).ids(split)[: a.limit]), (a.voc, ids))}
    else:
        print("error: give --halves or --learn-from ROOT:SPLIT", file=sys.stderr)
        return 2
    points = sorted({10**9 if p == "all" else int(p) for p in a.points.split(",")})  # all: every correction
    pool = _pool(a.config, a.workers)
    t0 = time.perf_counter()
    curves = {}
    for name, (learn, score) in directions.items():
        print(name, flush=True)
        noc_points = tuple(int(p) for p in a.noc_points.split(",") if p)
        curves[name] = curve(pool, learn, score, points, a.noc_every, noc_points, a.min_objects)
    if pool is not None:
        pool.close()
        pool.join()
    elapsed = time.perf_counter() - t0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = "python -m evaluator.learn " + " ".join(argv if argv is not None else sys.argv[1:])
    md = f"# learning curve, config `{a.config}`\n\nCommand: `{cmd}`  \nWall time: {elapsed:.0f} s, {a.workers} worker(s).\n\n"
    md += "\n\n".join(table(n, r) for n, r in curves.items()) + "\n"
    (out / "learn.md").write_text(md)
    (out / "learn.json").write_text(json.dumps({"command": cmd, "seconds": elapsed, "curves": curves}, indent=1))
    plot(curves, out / "learning_curve.png")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
