"""Issue 12 session 6: featcut's tag masks through the engine with and without the fallback of
model/tagprop.py (TagParams.fallback), on the 205 VOC images, both halves, in one pass.

    .venv/bin/python tools/experiments/tags_empty_engine.py [STEP] [walk | keeprel]

With ``walk``: featcut against featcut without class_tag_walk_scaled (the walk on the first
pass's grid and features), both with the fallback, two Segmenters on one network. With
``keeprel`` (session 8): featcut against featcut without class_tag_keep_rel (the absolute keep
gate alone), likewise; with ``recut``: featcut against featcut without class_tag_recut.

Tags = the ground-truth classes present (the evaluator's class task). Prints class-wise binary
mIoU on all / A / B / E / O, the empty (image, tag) pairs of each, per-class IoU, and the CPU
time of the fallback per tag.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import cv2
import numpy as np
import torch
from tags_cache import VOC_ROOT, ids
from tags_common import SPLITS, report, split_of

from evaluator.dataset import VocDataset
from evaluator.metrics import BinaryCounts
from model import voc
from model.engine import Segmenter, get_config
from model.tagprop import answer, gate


def main() -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    step = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    cfg = get_config("featcut")
    mode = sys.argv[2] if len(sys.argv) > 2 else ""
    if mode == "":  # session 6's measure of the gate's fallback: the served mask is the gate's, no re-cut
        cfg = dataclasses.replace(cfg, class_tag_recut=False)
    seg = Segmenter(cfg)
    assert seg._tagprop is not None and cfg.class_tag_fallback is not None
    walk = mode in ("walk", "keeprel", "recut")
    off = {
        "walk": {"class_tag_walk_scaled": False},
        "keeprel": {"class_tag_keep_rel": None},
        "recut": {"class_tag_recut": False},
    }.get(mode, {})
    other = Segmenter(dataclasses.replace(cfg, **off), net=seg.net) if walk else None  # type: ignore[arg-type]
    if mode == "recut":
        names = ("featcut, the gated mask", "featcut, re-cut by the box core")
    elif mode == "keeprel":
        names = ("featcut, absolute keep gate", f"featcut, keep_rel {cfg.class_tag_keep_rel}")
    elif walk:
        names = ("featcut, walk on the first pass", "featcut, walk on the 1.5x pass")
    else:
        names = ("featcut before (no fallback)", f"featcut + fallback {cfg.class_tag_fallback}")
    counts = {n: {s: BinaryCounts.zeros() for s in SPLITS} for n in names}
    empty: dict[str, list[tuple[str, str, str | None, int]]] = {n: [] for n in names}
    cpu: list[float] = []
    ds = VocDataset(VOC_ROOT)
    all_ids = ids()
    for k in range(0, len(all_ids), step):
        s = ds.load(all_ids[k])
        seg.set_image(s.image)
        if other is not None:
            other.set_image(s.image)
        tags = s.classes_present()
        valid = s.class_mask != 255
        for c in tags:
            rivals = tuple(o for o in tags if o != c)
            res = seg._segment_class_cam(c, None, False, rivals)
            if other is not None:
                old = other.segment_class(c, others=tags).mask
                t0 = time.process_time()
                new = seg.segment_class(c, others=tags).mask
                cpu.append(time.process_time() - t0)
            elif res.fallback == "no_cam":
                old = new = res.mask
            else:
                key, share = seg._tagprop.shares(seg, tags)
                j = key.index(c)
                old = gate(res.mask[None], share[[0, j + 1]], seg._tagprop.params)[0]
                t0 = time.process_time()
                new = answer(res.mask, share, j, seg.class_cam(c)[0], seg._tagprop.params, res.fallback is None)
                cpu.append(time.process_time() - t0)
            if other is None:
                served = seg.segment_class(c, others=tags).mask
                assert np.array_equal(served, new), (s.image_id, c)  # the engine serves what is measured here
            t = voc.voc_index(c)
            for n, m in zip(names, (old, new), strict=True):
                if not m.any():
                    empty[n].append((s.image_id, c, res.fallback, int((s.class_mask == t).sum())))
                for sp in split_of(k, len(all_ids)):
                    counts[n][sp].add(t - 1, m, s.class_mask == t, valid)
        if k % 20 == 0:
            print(k, s.image_id, flush=True)
    report(counts)
    for n, by in counts.items():
        b = by["all"]
        iou = b.iou()
        ratio = (b.tp + b.fp) / np.maximum(b.tp + b.fn, 1)
        per = [f"{voc.VOC_CLASSES[i][:6]} {100 * iou[i]:.1f} ({ratio[i]:.1f})" for i in range(20) if b.seen[i]]
        print(f"{n}: " + ", ".join(per))
        print(f"  empty {len(empty[n])}: {empty[n]}")
    what = "the served tag (the first includes the shares)" if walk else "fallback + gate"
    print(f"{what} CPU per tag p50 {1000 * np.median(cpu):.1f} ms, max {1000 * max(cpu):.1f} ms")


if __name__ == "__main__":
    main()
