"""Issue 12 session 8: a zoom pass per tag, on records of the served featcut engine.

    .venv/bin/python tools/experiments/tags_zoom.py cache [STEP]   # engine + zoom passes -> /tmp/camcut_tags8
    .venv/bin/python tools/experiments/tags_zoom.py score [STEP]   # variants on those records, all / A / B / E / O

``cache`` runs the served featcut engine on the 205 VOC images (tags = the classes present) and
keeps per tag: `default`'s cut (the engine's GrabCut mask before the gate), the shares of the
image's tags, the tag's CAM, the served mask, and a zoom pass: the CNN on a crop around the
served mask and the tag's share >= 0.3 (grown by ``GROW`` of its side each way), resized so its
longer side is the CNN side, with every tag's CAM of that pass propagated by the same walk on
the crop's own fire3 / fire5 (two normalisations: each tag by its own peak in the crop, or all
tags by the largest of their peaks, so a rival absent from the crop stays weak). ``score``
merges the crop's shares with the image's in variants and re-gates today's cut; nothing is
fitted to VOC labels (coarse grids, a variant counts only if it gains on all four halves).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from tags_cache import VOC_ROOT, ids
from tags_common import SPLITS, per_class, report, split_of

from evaluator.dataset import VocDataset
from evaluator.metrics import BinaryCounts
from model import voc
from model.cnn import pool_voc_cams
from model.engine import Segmenter, get_config
from model.features import forward_features
from model.tagprop import TagParams, answer, propagated_shares

CACHE8 = Path(os.environ.get("TAGS_CACHE8", "/tmp/camcut_tags8"))
GROW = 0.25


def crop_box(region: np.ndarray, grow: float = GROW, min_side: int = 48) -> tuple[int, int, int, int] | None:
    ys, xs = np.nonzero(region)
    if not len(ys):
        return None
    h, w = region.shape
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    gy, gx = max(grow * (y1 - y0), (min_side - (y1 - y0)) / 2, 0), max(grow * (x1 - x0), (min_side - (x1 - x0)) / 2, 0)
    return int(max(0, y0 - gy)), int(min(h, y1 + gy)), int(max(0, x0 - gx)), int(min(w, x1 + gx))


def zoom_shares(net, image, box, idx, side: int, params: TagParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The crop's (K + 1, hc, wc) shares, two normalisations, and the raw (K, h16, w16) CAMs."""
    y0, y1, x0, x1 = box
    crop = image[y0:y1, x0:x1]
    f = side / max(crop.shape[:2])
    size = (max(1, round(crop.shape[1] * f)), max(1, round(crop.shape[0] * f)))
    x = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    q = forward_features(net, x, None, ("fire3", "fire5"))
    cams = pool_voc_cams(q.cam)[idx]
    layers = [q.layers["fire3"], q.layers["fire5"]]
    own = propagated_shares(q.input_shape, cams, layers, crop.shape[:2], params)
    # common scale: every tag divided by the largest peak, so the others keep their relative size
    peak = max(float(np.maximum(cams, 0).max()), 1e-6)
    common_cams = np.maximum(cams, 0) / peak
    common = _common_shares(q.input_shape, common_cams, layers, crop.shape[:2], params)
    return own, common, cams


def _common_shares(cnn_shape, cams, layers, crop_shape, params):
    from model.tagprop import affinity_features, propagate, resize_maps, shares

    gsize = (max(2, int(np.ceil(cnn_shape[1] / params.grid))), max(2, int(np.ceil(cnn_shape[0] / params.grid))))
    s = resize_maps(cams, gsize).clip(min=0)
    bg = (1.0 - s.max(0)) ** params.alpha
    sc = np.concatenate([bg[None], s]).astype(np.float32)
    sc = propagate(sc, affinity_features(layers, gsize), params)
    return shares(sc, crop_shape)


def cache(step: int) -> None:
    CACHE8.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    cfg = get_config("featcut")
    seg = Segmenter(cfg)
    assert seg._tagprop is not None
    params = seg._tagprop.params
    zparams = TagParams()  # the walk's own settings, one scale: the crop is the zoom
    ds = VocDataset(VOC_ROOT)
    all_ids = ids()
    cpu: list[float] = []
    t00 = time.time()
    for k in range(0, len(all_ids), step):
        p = CACHE8 / f"{all_ids[k]}.npz"
        if p.is_file():
            continue
        s = ds.load(all_ids[k])
        seg.set_image(s.image)
        tags = s.classes_present()
        key, share = seg._tagprop.shares(seg, tags)
        out: dict[str, np.ndarray] = {
            "gt": s.class_mask,
            "key": np.array([voc.voc_index(c) for c in key]),
            "share": share.astype(np.float16),
        }
        idx = [voc.voc_index(c) - 1 for c in key]
        for c in key:
            j = key.index(c)
            rivals = tuple(o for o in key if o != c)
            res = seg._segment_class_cam(c, None, False, rivals)
            cam = seg.class_cam(c)[0]
            cut_ran = res.fallback is None
            served = res.mask if res.fallback == "no_cam" else answer(res.mask, share, j, cam, params, cut_ran)
            out[f"base{j}"] = np.packbits(res.mask, axis=-1)
            out[f"served{j}"] = np.packbits(served, axis=-1)
            out[f"cam{j}"] = cam.astype(np.float16)
            out[f"flag{j}"] = np.array([res.fallback == "no_cam", cut_ran])
            box = crop_box(served | (share[j + 1] >= params.keep))
            if box is None or res.fallback == "no_cam":
                continue
            t0 = time.process_time()
            own, common, zc = zoom_shares(seg.net.net, seg.image, box, idx, cfg.cnn_max_side or 320, zparams)
            cpu.append(time.process_time() - t0)
            out[f"box{j}"] = np.array(box)
            out[f"zown{j}"] = own.astype(np.float16)
            out[f"zcom{j}"] = common.astype(np.float16)
            out[f"zcam{j}"] = zc
        np.savez_compressed(p, **out)  # type: ignore[arg-type]
        if k % 20 == 0:
            print(k, all_ids[k], f"{time.time() - t00:.0f}s zoom cpu p50 {1000 * np.median(cpu):.0f} ms", flush=True)
    print(f"zoom pass + crop walk CPU per tag p50 {1000 * np.median(cpu):.1f} ms, p95 {1000 * np.percentile(cpu, 95):.1f}")


def unpack(z, name: str, w: int) -> np.ndarray:
    return np.unpackbits(z[name], axis=-1)[..., :w].astype(bool)


def variants(z, params: TagParams) -> dict[str, list[np.ndarray]]:
    gt = z["gt"]
    h, w = gt.shape
    key = list(z["key"])
    share = z["share"].astype(np.float32)
    out: dict[str, list[np.ndarray]] = {}

    def put(name: str, m: np.ndarray) -> None:
        out.setdefault(name, []).append(m)

    for j in range(len(key)):
        base, served = unpack(z, f"base{j}", w), unpack(z, f"served{j}", w)
        no_cam, cut_ran = (bool(v) for v in z[f"flag{j}"])
        cam = z[f"cam{j}"].astype(np.float32)
        put("served", served)
        # evidence-relative gate: keep where the share is at least r x the tag's peak share (and
        # at least keep); the add gate and the fallback unchanged
        peak = float(share[j + 1].max())
        bgw = share[j + 1] > share[0]
        wins = share.argmax(0) == j + 1
        for r in REL:
            put(f"rel{r}", served if no_cam else answer(base, share, j, cam, rel_params(params, r, peak), cut_ran))
        r5 = served if no_cam else answer(base, share, j, cam, rel_params(params, 0.5, peak), cut_ran)
        for c in (0.1, 0.2):  # a size prior from the CAM: nothing where the tag's CAM is below c x its peak
            g = r5 & (cam >= c)
            put(f"rel0.5+camfloor{c}", g if g.any() else r5)
        for f in (0.6, 0.8):  # components whose best share is weak against the tag's peak dropped
            put(f"rel0.5+comp{f}", components(r5, share[j + 1], f))
        for f in (0.05, 0.2):  # components small against the largest dropped
            put(f"rel0.5+size{f}", small_dropped(r5, f))
        for ra in (0.7, 0.9):  # the add gate relative too
            pp = dataclasses.replace(rel_params(params, 0.5, peak), add=max(params.add, ra * peak))
            put(f"rel0.5+add{ra}", served if no_cam else answer(base, share, j, cam, pp, cut_ran))
        for name, extra in (("beatbg", bgw), ("wins", wins)):
            if no_cam:
                put(name, served)
                put(f"rel0.5+{name}", served)
                continue
            for nm, pp in ((name, params), (f"rel0.5+{name}", rel_params(params, 0.5, peak))):
                g = base & (share[j + 1] >= pp.keep) & extra | (share[j + 1] >= pp.add)
                put(nm, g if g.any() else answer(base, share, j, cam, pp, cut_ran))
        has = f"box{j}" in z
        if has:
            y0, y1, x0, x1 = z[f"box{j}"]
        for kind in ("zown", "zcom"):
            if not has:
                for wgt in MIX:
                    put(f"{kind} mix{wgt}", served)
                for t in VETO:
                    put(f"{kind} veto{t}", served)
                put(f"rel0.5+{kind} mix0.5 small", r5)
                continue
            zs = z[f"{kind}{j}"].astype(np.float32)
            full = np.zeros_like(share)
            full[0] = 1  # outside the crop: background
            full[:, y0:y1, x0:x1] = zs
            for wgt in MIX:
                mixed = (1 - wgt) * share + wgt * full
                put(f"{kind} mix{wgt}", answer(base, mixed, j, cam, params, cut_ran))
            small = (y1 - y0) * (x1 - x0) < 0.25 * h * w  # the zoom only where the crop is small
            for wgt in (0.5,):
                mixed = (1 - wgt) * share + wgt * full
                pr = rel_params(params, 0.5, float(mixed[j + 1].max()))
                put(f"rel0.5+{kind} mix{wgt} small", answer(base, mixed, j, cam, pr, cut_ran) if small else r5)
            for t in VETO:  # veto only: the served mask where the crop's share is at least t
                put(f"{kind} veto{t}", served & (full[j + 1] >= t))
    return out


MIX = (0.25, 0.5, 0.75)
REL = (0.4, 0.5, 0.6)


def components(m: np.ndarray, share: np.ndarray, f: float) -> np.ndarray:
    n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
    if n <= 2:
        return m
    best = np.zeros(n)
    np.maximum.at(best, lab.ravel().astype(np.intp), share.ravel())
    best[0] = 0
    ok = best >= f * best.max()
    return ok[lab] & m


def small_dropped(m: np.ndarray, f: float) -> np.ndarray:
    n, lab = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
    if n <= 2:
        return m
    area = np.bincount(lab.ravel(), minlength=n).astype(float)
    area[0] = 0
    return (area >= f * area.max())[lab] & m


def rel_params(params: TagParams, r: float, peak: float) -> TagParams:
    return dataclasses.replace(params, keep=max(params.keep, r * peak))


VETO = (0.1, 0.2)


def score(step: int) -> None:
    params = TagShares_params()
    counts: dict[str, dict[str, BinaryCounts]] = {}
    all_ids = ids()
    for k in range(0, len(all_ids), step):
        p = CACHE8 / f"{all_ids[k]}.npz"
        if not p.is_file():
            continue
        with np.load(p) as z:
            gt = z["gt"]
            valid = gt != 255
            res = variants(z, params)
            for n, masks in res.items():
                by = counts.setdefault(n, {s: BinaryCounts.zeros() for s in SPLITS})
                for t, m in zip(z["key"], masks, strict=True):
                    for sp in split_of(k, len(all_ids)):
                        by[sp].add(int(t) - 1, m, gt == t, valid)
    report(counts)
    for n, by in counts.items():
        print(f"{n}: {per_class(by['all'], 1)}")


def TagShares_params() -> TagParams:
    cfg = get_config("featcut")
    return TagParams(scales=cfg.class_tag_scales, fallback=cfg.class_tag_fallback, walk_scaled=cfg.class_tag_walk_scaled)


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "score"
    st = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    cache(st) if mode == "cache" else score(st)
