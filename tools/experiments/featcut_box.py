"""Box one-shot mIoU of featcut variants (and the engine's `default`) per half of the images.

    .venv/bin/python tools/experiments/featcut_box.py [--limit N] [--workers 2] \
        --variant base: --variant nofeat:use_features=False --variant lam4:lam=4 [--default]

Metric: the evaluator's class-wise binary IoU (evaluator.metrics.BinaryCounts, the report's
formula 4-6), objects from their XML boxes, void ignored, exactly as `python -m evaluator
--tasks object` scores one technique. Halves: A = even, B = odd position in the sorted train
list. CNN outputs + PCA-reduced features are cached in /tmp/qc/feat (keyed by image id and CNN
size); the CAM comes from the same pass (bit-identical to the engine's at 320 px).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from evaluator.dataset import VocDataset
from evaluator.metrics import BinaryCounts
from model import voc
from model.cnn import normalise
from model.engine import CnnOutput, Segmenter, get_config, pool_voc_cams
from model.featcut import FeatCut, FeatCutParams, Prompt, grow, segment
from model.features import PixelFeatures

VOC_ROOT = os.environ.get("CAMCUT_VOC", "/work/shared/voc2012/VOC2012")
CACHE = Path(os.environ.get("FEATCUT_CACHE", "/tmp/qc/feat"))


def parse_value(v: str) -> object:
    try:
        return json.loads(v.replace("None", "null").replace("True", "true").replace("False", "false"))
    except json.JSONDecodeError:
        return v


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition(":")
    kw = {}
    for part in filter(None, rest.split(",")):
        k, _, v = part.partition("=")
        kw[k] = parse_value(v)
    return name, kw


def make_params(kw: dict) -> FeatCutParams:
    fields = set(FeatCutParams.__dataclass_fields__)
    extra = {k: v for k, v in kw.items() if k not in fields}
    return FeatCutParams(**{k: v for k, v in kw.items() if k in fields}, extra=extra)


def image_features(seg: Segmenter, image_id: str, image: np.ndarray, side: int, dims: int) -> PixelFeatures:
    CACHE.mkdir(parents=True, exist_ok=True)
    p = CACHE / f"{image_id}_{side}_{dims}.npz"
    if p.is_file():
        with np.load(p) as z:
            maps = {k[2:]: z[k] for k in z.files if k.startswith("m_")}
            return PixelFeatures(maps, image.shape[:2], z["logits"], z["voc_cams"])
    pf = PixelFeatures.of_image(seg.net.net, image, side, dims=dims)
    vc = pool_voc_cams(pf.cam)
    tmp = p.with_suffix(f".{os.getpid()}.tmp.npz")
    arrays = {"logits": pf.logits, "voc_cams": vc, **{f"m_{k}": v for k, v in pf.maps.items()}}
    np.savez(tmp, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as the allow_pickle flag
    os.replace(tmp, p)
    return PixelFeatures(pf.maps, image.shape[:2], pf.logits, vc)


_W: dict = {}


def crop_cam(
    seg: Segmenter, image: np.ndarray, box: tuple[int, int, int, int], name: str, side: int, margin: float
) -> np.ndarray:
    """The class's raw CAM from a CNN pass on the box's window alone, resized so its longer side is
    ``side`` (up or down), upsampled back into the window (zero elsewhere): finer evidence for a small
    box than the whole image's 320 px pass (whose CAM cell is 16 input px)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = grow(box, margin, w, h)
    crop = image[y0:y1, x0:x1]
    s = side / max(crop.shape[:2])
    size = (max(32, round(crop.shape[1] * s)), max(32, round(crop.shape[0] * s)))
    small = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    _, cam1000 = seg.net.forward(small)
    c = pool_voc_cams(cam1000)[voc.voc_index(name) - 1]
    out = np.zeros((h, w), np.float32)
    out[y0:y1, x0:x1] = cv2.resize(c, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR).clip(min=0)
    return out


def box_cam(seg: Segmenter, image: np.ndarray, box: tuple[int, int, int, int], name: str, extra: dict) -> tuple[np.ndarray, bool]:
    """The CAM a variant's cut sees: the engine's (the whole image's pass), or with ``crop_side`` in the
    variant's extras the crop pass's (``crop_mode`` replace / mean / max of the two, each divided by its
    box maximum)."""
    cam, ev = seg.class_cam(name, box)
    side = extra.get("crop_side")
    if not side:
        return cam, ev
    cc, cev = normalise(crop_cam(seg, image, box, name, int(side), float(extra.get("crop_margin", 0.10))), box)
    mode = extra.get("crop_mode", "replace")
    if mode == "replace" or not ev:
        return cc, cev
    if not cev:
        return cam, ev
    m = (cam + cc) / 2 if mode == "mean" else np.maximum(cam, cc)
    return normalise(m, box)


def _init(variants: list[tuple[str, dict]], with_default: bool, side: int, dims: int, diag: bool = False) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _W.update(
        ds=VocDataset(VOC_ROOT),
        seg=Segmenter(get_config("default")),
        variants=variants,
        default=with_default,
        side=side,
        dims=dims,
        diag=diag,
    )


def _work(job: tuple[int, str]) -> tuple[int, dict[str, BinaryCounts], dict[str, float], list[tuple]]:
    k, image_id = job
    ds, seg = _W["ds"], _W["seg"]
    sample = ds.load(image_id)
    pf = image_features(seg, image_id, sample.image, _W["side"], _W["dims"])
    seg.set_image(sample.image, CnnOutput(pf.logits, pf.cam))  # pf.cam holds the pooled VOC CAMs here
    valid = sample.valid
    counts: dict[str, BinaryCounts] = {}
    secs: dict[str, float] = {}
    objs = [o for o in sample.objects]
    diag: list[tuple] = []
    if _W["default"]:
        c = BinaryCounts.zeros()
        t0 = time.perf_counter()
        for o in objs:
            r = seg.segment_box(o.box, o.name)
            c.add(voc.voc_index(o.name) - 1, r.mask, sample.object_mask == o.instance, valid)
        counts["default"] = c
        secs["default"] = time.perf_counter() - t0
    h, w = sample.image.shape[:2]
    for name, kw in _W["variants"]:
        params = make_params(kw)
        t0 = time.perf_counter()
        c0 = time.process_time()
        core = FeatCut(params)
        c = BinaryCounts.zeros()
        for o in objs:
            x0, y0, x1, y1 = o.box.clip(w, h)
            cam, ev = box_cam(seg, sample.image, (x0, y0, x1, y1), o.name, params.extra)
            m = segment(core, sample.image, pf if params.use_features else None, Prompt((x0, y0, x1, y1)), cam if ev else None)
            gt = sample.object_mask == o.instance
            c.add(voc.voc_index(o.name) - 1, m, gt, valid)
            if _W["diag"]:
                inter, union = (m & gt & valid).sum(), ((m | gt) & valid).sum()
                b = np.s_[y0:y1, x0:x1]

                def cover(a: np.ndarray, b: tuple = b) -> float:  # share of the box's rows / columns a crosses
                    return float(a[b].any(axis=1).mean() + a[b].any(axis=0).mean()) / 2

                diag.append(
                    (name, o.name, inter / max(union, 1), (m & valid).sum() / max((gt & valid).sum(), 1), cover(gt), cover(m))
                )
        counts[name] = c
        secs[name] = time.perf_counter() - t0
        secs["cpu:" + name] = time.process_time() - c0
    secs["boxes"] = len(objs)
    return k % 2, counts, secs, diag


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--default", action="store_true", help="also the engine's default (GrabCut F PF 0.7)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cnn-side", type=int, default=320)
    ap.add_argument("--dims", type=int, default=8)
    ap.add_argument("--json", default=None)
    ap.add_argument("--diag", action="store_true", help="per-class IoU and per-object failure kinds")
    a = ap.parse_args()
    variants = [parse_variant(v) for v in a.variant]
    ids = VocDataset(VOC_ROOT).ids("train")[: a.limit]
    jobs = list(enumerate(ids))
    totals: dict[tuple[str, int], BinaryCounts] = {}
    secs: dict[str, float] = {}
    t0 = time.perf_counter()
    args = (variants, a.default, a.cnn_side, a.dims, a.diag)
    diags: list[tuple] = []
    results: Iterable[tuple[int, dict[str, BinaryCounts], dict[str, float], list[tuple]]]
    if a.workers <= 1:
        _init(*args)
        results = map(_work, jobs)
    else:
        pool = get_context("spawn").Pool(a.workers, initializer=_init, initargs=args)
        results = pool.imap_unordered(_work, jobs)
    for half, counts, sec, dg in results:
        diags += dg
        for name, c in counts.items():
            for key in ((name, half), (name, 2)):
                if key in totals:
                    totals[key] += c
                else:
                    totals[key] = BinaryCounts.zeros()
                    totals[key] += c
        for key, v in sec.items():  # each method's wall and "cpu:" seconds, and "boxes"
            secs[key] = secs.get(key, 0.0) + v
    names = (["default"] if a.default else []) + [n for n, _ in variants]
    print(f"{len(ids)} images, cnn {a.cnn_side}, dims {a.dims}, {time.perf_counter() - t0:.0f} s")
    # CPU per box: process time of segment() over the boxes (one thread; loaded machine), the CNN pass
    # and the feature cache excluded. Wall time per image beside it.
    print("| variant | mIoU all | half A | half B | s per image | CPU ms per box |")
    out = {}
    for n in names:
        m = [100 * float(np.nanmean(totals[(n, hh)].iou()[totals[(n, hh)].seen])) for hh in (2, 0, 1)]
        out[n] = m
        cpu = secs.get("cpu:" + n)
        cpu_txt = "-" if cpu is None else f"{cpu / max(secs['boxes'], 1) * 1e3:.1f}"
        print(f"| {n} | {m[0]:.1f} | {m[1]:.1f} | {m[2]:.1f} | {secs[n] / len(ids) * 1e3:.0f} ms | {cpu_txt} |")
    if a.diag:
        for n in names:
            c = totals[(n, 2)]
            print(
                n,
                "per class:",
                " ".join(f"{voc.VOC_CLASSES[i][:6]} {100 * c.iou()[i]:.0f}" for i in range(len(c.seen)) if c.seen[i]),
            )
            d = [r for r in diags if r[0] == n]
            if not d:
                continue
            iou, ratio, gcov, mcov = (np.array([r[k] for r in d]) for k in (2, 3, 4, 5))
            bad = iou < 0.7
            print(
                f"{n}: {len(d)} objects, IoU<0.7: {bad.sum()} (too big x1.2: {(bad & (ratio > 1.2)).sum()}, "
                f"too small x0.8: {(bad & (ratio < 0.8)).sum()}, other: {(bad & (ratio >= 0.8) & (ratio <= 1.2)).sum()}); "
                f"box-line cover gt {gcov.mean():.3f} mask {mcov.mean():.3f}, mask < gt by 0.05: {(mcov < gcov - 0.05).sum()}"
            )
    if a.json:
        per_class = {n: {h: [float(x) for x in totals[(n, h)].iou()] for h in (0, 1, 2)} for n in names}
        seen = {n: {h: [bool(x) for x in totals[(n, h)].seen] for h in (0, 1, 2)} for n in names}
        Path(a.json).write_text(
            json.dumps(
                {"variants": dict(variants), "miou": out, "images": len(ids), "class_iou": per_class, "seen": seen}, indent=1
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
