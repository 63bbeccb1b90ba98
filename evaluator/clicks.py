"""The clicks task: how many clicks an annotator needs, per engine configuration, side by side.

``python -m evaluator.clicks --configs default,featcut --voc DIR --out DIR [--start box|click]``

Protocol (the quality-core issue): every object instance of SegmentationObject (its XML box and
class) is segmented from its box (``--start box``) or from one positive click at the object's
interior point, no box (``--start click``). After each answer the next click goes to the
interior point (largest distance-transform value, the image border counting as boundary) of the
largest error region, 8-connected: positive on a missed region, negative on a false one. Void
pixels (255) are neither error nor IoU. At most ``--max-clicks`` (20) clicks.

Every configuration is driven through the public engine call the backend makes: the box with
its clicks as ``Seeds`` (``Segmenter.segment_box``), or the clicks alone (``segment_seeds``);
an engine whose call accepts ``previous`` also gets the mask it answered last, as an
interactive front end would hand it back.

Reported per configuration: NoC@85 / NoC@90 (mean clicks until the IoU first reaches the level,
``max_clicks`` when never), objects that never reach it, mean IoU after 0, 1, 3, 5 clicks,
per-click latency (median / p95 of the engine call answering one click), all of it also per half
of the images (even / odd position in the split list), and an IoU-vs-clicks curve PNG. Once an
object has reached ``--stop-iou`` (0.90) and had at least 5 clicks, the annotator stops: the
curve keeps its last IoU (``--stop-iou 1.01`` runs every click).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from scipy import ndimage
from tqdm import tqdm

from model.engine import Seeds, Segmenter, get_config

from .dataset import DatasetError, VocDataset, VocObject, VocSample
from .sweep import CnnCache

LEVELS = (0.85, 0.90)
REPORT_AFTER = (0, 1, 3, 5)
MIN_CLICKS = max(REPORT_AFTER)  # run at least this many clicks so IoU@1/3/5 are measured


@dataclass
class ObjectRun:
    """One object's click sequence under one configuration."""

    image_id: str
    instance: int
    voc_class: str
    half: int  # 0 / 1: the image's position in the split list, even / odd
    ious: list[float] = field(default_factory=list)  # IoU after 0, 1, ... clicks (len max_clicks + 1)
    clicks: list[tuple[int, int, bool]] = field(default_factory=list)  # (x, y, positive)
    latencies_ms: list[float] = field(default_factory=list)  # engine wall time answering each click
    cpu_ms: list[float] = field(default_factory=list)  # the same calls' CPU time (this thread): on a shared
    # machine the wall time also counts other jobs' time slices

    def noc(self, level: float, max_clicks: int) -> int:
        """Clicks until IoU >= level (0 if the start already does), ``max_clicks`` if never."""
        for k, v in enumerate(self.ious):
            if v >= level:
                return k
        return max_clicks


def iou(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float:
    """IoU over non-void pixels (1.0 when both are empty there)."""
    union = int(np.count_nonzero((pred | gt) & valid))
    return 1.0 if union == 0 else int(np.count_nonzero(pred & gt & valid)) / union


def interior_point(region: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel farthest from the region's boundary (image border included); the first
    in raster order on ties, so the simulator is deterministic.

    SciPy's exact Euclidean transform, not OpenCV's DIST_MASK_PRECISE: OpenCV's float32 result
    differs in the last bit from process to process at equal distances (sqrt(61) at three pixels
    of 2007_009832's first error region), so the "first" tie, and every click after it, changed
    from run to run. SciPy computes squared distances exactly, so equal distances are equal."""
    padded = np.pad(region.astype(bool), 1)
    dt = ndimage.distance_transform_edt(padded)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dt)), dt.shape)
    return int(x), int(y)


def largest_error(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """The largest 8-connected error region and whether it is missed (True) or false (False);
    None when there is no error. A tie in area goes to the missed region."""
    best: tuple[int, np.ndarray, bool] | None = None
    for positive, err in ((True, gt & ~pred & valid), (False, pred & ~gt & valid)):
        if not err.any():
            continue
        n, lab, stats, _ = cv2.connectedComponentsWithStats(err.astype(np.uint8), connectivity=8)
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        area = int(stats[k, cv2.CC_STAT_AREA])
        if best is None or area > best[0]:
            best = (area, lab == k, positive)
    return None if best is None else (best[1], best[2])


def next_click(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> tuple[int, int, bool] | None:
    """The simulated annotator's next click (x, y, positive), or None when the mask is perfect."""
    found = largest_error(pred, gt, valid)
    if found is None:
        return None
    region, positive = found
    x, y = interior_point(region)
    return x, y, positive


def _accepts_previous(fn: object) -> bool:
    try:
        return "previous" in inspect.signature(fn).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def run_object(
    seg: Segmenter, sample: VocSample, obj: VocObject, half: int, start: str = "box", max_clicks: int = 20, stop_iou: float = 0.90
) -> ObjectRun:
    """Simulate one annotator on one object (the image already set on ``seg``)."""
    gt = sample.object_mask == obj.instance
    valid = sample.object_mask != 255
    run = ObjectRun(sample.image_id, obj.instance, obj.name, half)
    pos: list[tuple[float, float]] = []
    neg: list[tuple[float, float]] = []
    box_call, seeds_call = seg.segment_box, seg.segment_seeds
    prev_kw = {"box": _accepts_previous(box_call), "click": _accepts_previous(seeds_call)}[start]
    pred: np.ndarray | None = None
    if start == "box":
        pred = box_call(obj.box, obj.name).mask
    elif start != "click":
        raise ValueError(f"start must be 'box' or 'click', got {start!r}")
    else:
        pred = np.zeros_like(gt)
    run.ious.append(iou(pred, gt, valid) if start == "box" else 0.0)
    for k in range(1, max_clicks + 1):
        if k > MIN_CLICKS and run.ious[-1] >= stop_iou:
            break
        click = next_click(pred, gt, valid)
        if click is None:
            break
        x, y, positive = click
        run.clicks.append(click)
        (pos if positive else neg).append((float(x), float(y)))
        seeds = Seeds(tuple(pos), tuple(neg))
        kw: dict[str, Any] = {"previous": pred} if prev_kw and (start == "box" or k > 1) else {}
        t0, c0 = time.perf_counter(), time.thread_time()
        if start == "box":
            res = box_call(obj.box, obj.name, seeds=seeds, **kw)
        else:
            res = seeds_call(seeds, obj.name, **kw)
        run.latencies_ms.append((time.perf_counter() - t0) * 1e3)
        run.cpu_ms.append((time.thread_time() - c0) * 1e3)
        pred = res.mask
        run.ious.append(iou(pred, gt, valid))
    run.ious += [run.ious[-1]] * (max_clicks + 1 - len(run.ious))  # the annotator stopped: IoU stays
    return run


# -- worker processes ------------------------------------------------------------------------
_W: dict = {}


def _init(
    voc_root: str,
    configs: tuple[str, ...],
    cache_dir: str | None,
    start: str,
    max_clicks: int,
    stop_iou: float,
    halves: dict[str, int],
    pool: bool,
) -> None:
    if pool:  # one thread per process: the pool fills the cores
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
    segs = {c: Segmenter(get_config(c)) for c in configs}
    caches = {c: CnnCache(cache_dir, s.net.weights.sha256, s.config) for c, s in segs.items()}
    _W.update(
        ds=VocDataset(voc_root), segs=segs, caches=caches, start=start, max_clicks=max_clicks, stop_iou=stop_iou, halves=halves
    )


def _work(job: tuple[str, str]) -> list[ObjectRun]:
    config, image_id = job
    sample = _W["ds"].load(image_id)
    seg: Segmenter = _W["segs"][config]
    cache: CnnCache = _W["caches"][config]
    cnn = cache.get(sample.image)
    out = seg.set_image(sample.image, cnn)
    if cnn is None:
        cache.put(sample.image, out)
    runs = []
    for obj in sample.objects:
        if not np.any(sample.object_mask == obj.instance):
            continue  # an XML object without pixels in SegmentationObject cannot be scored
        runs.append(run_object(seg, sample, obj, _W["halves"][image_id], _W["start"], _W["max_clicks"], _W["stop_iou"]))
    return runs


def simulate(
    voc_root: str | Path,
    configs: list[str],
    split: str = "train",
    start: str = "box",
    max_clicks: int = 20,
    stop_iou: float = 0.90,
    limit: int | None = None,
    workers: int = 1,
    cache_dir: str | None = None,
    progress: bool = True,
) -> dict[str, list[ObjectRun]]:
    """Every object of the split (first ``limit`` images) under every configuration."""
    for c in configs:
        get_config(c)  # unknown names fail before any work
    ds = VocDataset(voc_root)
    ids = ds.ids(split)[:limit]
    halves = {i: k % 2 for k, i in enumerate(ids)}
    jobs = [(c, i) for c in configs for i in ids]
    args = (str(ds.root), tuple(configs), cache_dir, start, max_clicks, stop_iou, halves)
    out: dict[str, list[ObjectRun]] = {c: [] for c in configs}
    bar = tqdm(total=len(jobs), desc=f"clicks ({start})", unit="img", disable=not progress)
    if workers <= 1:
        _init(*args, pool=False)
        results: Iterable[list[ObjectRun]] = map(_work, jobs)
    else:
        ctx = get_context("spawn").Pool(workers, initializer=_init, initargs=(*args, True))
        results = ctx.imap(_work, jobs)
    for (c, _), runs in zip(jobs, results, strict=True):
        out[c].extend(runs)
        bar.update()
    bar.close()
    if workers > 1:
        ctx.close()
        ctx.join()
    return out


def summarise(runs: list[ObjectRun], max_clicks: int) -> dict:
    """NoC, fails, IoU after 0/1/3/5 clicks and per-click latency of a list of object runs."""
    if not runs:
        return {"objects": 0}
    ious = np.array([r.ious for r in runs])
    lat = np.array([t for r in runs for t in r.latencies_ms]) if any(r.latencies_ms for r in runs) else np.zeros(1)
    s: dict = {"objects": len(runs)}
    for lv in LEVELS:
        nocs = np.array([r.noc(lv, max_clicks) for r in runs])
        s[f"noc@{round(lv * 100)}"] = round(float(nocs.mean()), 3)
        s[f"fail@{round(lv * 100)}"] = int(np.count_nonzero(ious.max(axis=1) < lv))
    s["iou_after"] = {str(k): round(float(ious[:, k].mean()), 4) for k in REPORT_AFTER if k <= max_clicks}
    s["click_ms_p50"] = round(float(np.percentile(lat, 50)), 1)
    s["click_ms_p95"] = round(float(np.percentile(lat, 95)), 1)
    cpu = np.array([t for r in runs for t in r.cpu_ms]) if any(r.cpu_ms for r in runs) else np.zeros(1)
    s["click_cpu_ms_p50"] = round(float(np.percentile(cpu, 50)), 1)
    s["click_cpu_ms_p95"] = round(float(np.percentile(cpu, 95)), 1)
    s["clicks_run"] = int(sum(len(r.latencies_ms) for r in runs))
    steps = [b < a - 1e-9 for r in runs for a, b in zip(r.ious[:-1], r.ious[1:], strict=True)]
    s["worse_after_click"] = round(float(np.mean(steps)), 4) if steps else 0.0
    return s


def plot_curves(results: dict[str, list[ObjectRun]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, runs in results.items():
        if runs:
            ious = np.array([r.ious for r in runs]).mean(axis=0)
            ax.plot(np.arange(len(ious)), ious, marker="o", ms=3, label=name)
    ax.set_xlabel("clicks")
    ax.set_ylabel("mean IoU")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(summaries: dict[str, dict]) -> str:
    rows = [
        "| config | half | objects | NoC@85 | NoC@90 | fail@85 | fail@90 | IoU after 0 / 1 / 3 / 5 "
        "| click ms p50 / p95 (CPU) | worse after a click |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for name, by_half in summaries.items():
        for half, s in by_half.items():
            if not s.get("objects"):
                continue
            ia = " / ".join(f"{v:.3f}" for v in s["iou_after"].values())
            rows.append(
                f"| {name} | {half} | {s['objects']} | {s['noc@85']:.2f} | {s['noc@90']:.2f} "
                f"| {s['fail@85']} | {s['fail@90']} | {ia} | {s['click_ms_p50']:.1f} / {s['click_ms_p95']:.1f} "
                f"({s['click_cpu_ms_p50']:.1f} / {s['click_cpu_ms_p95']:.1f}) "
                f"| {s['worse_after_click']:.3f} |"
            )
    return "\n".join(rows)


def per_class_table(results: dict[str, list[ObjectRun]], max_clicks: int, level: float = 0.90) -> str:
    """Per configuration and VOC class: objects, NoC at ``level``, the objects never there, and the
    clicks over the target of 5 a class adds in all (where the remaining clicks go), worst first."""
    pct = round(level * 100)
    rows = [
        f"| config | class | objects | NoC@{pct} | fail@{pct} | IoU after 0 | clicks over 5 in all |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, runs in results.items():
        by: dict[str, list[ObjectRun]] = {}
        for r in runs:
            by.setdefault(r.voc_class, []).append(r)
        stats = []
        for cls, rs in by.items():
            nocs = [r.noc(level, max_clicks) for r in rs]
            fails = sum(max(r.ious) < level for r in rs)
            stats.append(
                (sum(nocs) - 5.0 * len(rs), cls, len(rs), float(np.mean(nocs)), fails, float(np.mean([r.ious[0] for r in rs])))
            )
        for excess, cls, n, noc, fails, iou0 in sorted(stats, reverse=True):
            rows.append(f"| {name} | {cls} | {n} | {noc:.2f} | {fails} | {iou0:.3f} | {excess:+.0f} |")
    return "\n".join(rows)


def load_runs(path: str | Path) -> dict[str, list[ObjectRun]]:
    """The object runs of an ``objects.jsonl`` this command wrote, per configuration."""
    out: dict[str, list[ObjectRun]] = {}
    with open(path) as f:
        for line in f:
            d = json.loads(line)
            config = d.pop("config")
            d["clicks"] = [tuple(c) for c in d["clicks"]]
            out.setdefault(config, []).append(ObjectRun(**d))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m evaluator.clicks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--voc", default=os.environ.get("CAMCUT_VOC", "../shared/voc2012/VOC2012"))
    ap.add_argument("--split", default="train")
    ap.add_argument("--config", default=None, help="one engine configuration (or use --configs)")
    ap.add_argument("--configs", default=None, help="comma list of configurations, run side by side")
    ap.add_argument("--start", choices=("box", "click"), default="box")
    ap.add_argument("--max-clicks", type=int, default=20)
    ap.add_argument("--stop-iou", type=float, default=0.90, help="the annotator stops here (after at least 5 clicks)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--cache", default=".cache/cnn", help="CNN output cache folder ('' to disable)")
    ap.add_argument("--out", default="runs/clicks")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    configs = [c for c in (a.configs or a.config or "default").split(",") if c]
    if a.max_clicks < 1 or (a.limit is not None and a.limit < 1):
        print("error: --max-clicks and --limit must be positive", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    try:
        results = simulate(
            a.voc, configs, a.split, a.start, a.max_clicks, a.stop_iou, a.limit, a.workers, a.cache or None, not a.no_progress
        )
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - t0
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = {
        c: {
            "all": summarise(r, a.max_clicks),
            "A (even)": summarise([x for x in r if x.half == 0], a.max_clicks),
            "B (odd)": summarise([x for x in r if x.half == 1], a.max_clicks),
        }
        for c, r in results.items()
    }
    cmd = "python -m evaluator.clicks " + " ".join(argv if argv is not None else sys.argv[1:])
    md = (
        f"# clicks task, start from a {a.start}\n\nCommand: `{cmd}`  \n"
        f"Wall time: {elapsed:.0f} s, {a.workers} worker(s).\n\n{table(summaries)}\n"
    )
    (out / "clicks.md").write_text(md)
    (out / "summary.json").write_text(json.dumps({"command": cmd, "seconds": elapsed, "summaries": summaries}, indent=1))
    with open(out / "objects.jsonl", "w") as f:
        for c, runs in results.items():
            for r in runs:
                f.write(json.dumps({"config": c, **asdict(r)}) + "\n")
    (out / "per_class.md").write_text(
        f"# clicks task per class, start from a {a.start}\n\nCommand: `{cmd}`\n\n{per_class_table(results, a.max_clicks)}\n"
    )
    plot_curves(results, out / f"iou_vs_clicks_{a.start}.png", f"IoU vs clicks (start: {a.start})")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
