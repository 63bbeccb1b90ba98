"""Shared by the tag experiments: the cached records and class-wise binary mIoU on both halves.

Halves of the 205 sorted image ids: A = first half, B = second half, E = even positions,
O = odd positions. A choice is only kept if it helps on all four.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tags_cache import CACHE, ids  # noqa: E402

from evaluator.metrics import BinaryCounts  # noqa: E402

SPLITS = ("all", "A", "B", "E", "O")


@dataclass
class Rec:
    iid: str
    small: np.ndarray  # (h, w, 3) uint8 at the CNN input size
    gt: np.ndarray  # (H, W) uint8 class mask, 255 void
    voc_cams: np.ndarray  # (20, h16, w16)
    logits: np.ndarray
    tags: list[int]  # VOC label ids (1..20) of the ground-truth classes
    base: np.ndarray  # (K, H, W) bool: today's default masks, one per tag
    f3: np.ndarray
    f5: np.ndarray
    f9: np.ndarray


def load(iid: str) -> Rec:
    with np.load(CACHE / f"{iid}.npz") as z:
        gt = z["gt"]
        base = np.unpackbits(z["base"], axis=-1)[..., : gt.shape[1]].astype(bool)
        return Rec(
            iid,
            z["small"],
            gt,
            z["voc_cams"],
            z["logits"],
            [int(t) for t in z["tags"]],
            base,
            z["f3"].astype(np.float32),
            z["f5"].astype(np.float32),
            z["f9"].astype(np.float32),
        )


def split_of(k: int, n: int) -> tuple[str, ...]:
    return ("all", "A" if k < (n + 1) // 2 else "B", "E" if k % 2 == 0 else "O")


def records(limit: int | None = None, step: int = 1) -> Iterable[tuple[int, int, Rec]]:
    all_ids = ids()
    for k in range(0, len(all_ids) if limit is None else min(limit, len(all_ids)), step):
        yield k, len(all_ids), load(all_ids[k])


Method = Callable[[Rec], np.ndarray]  # -> (K, H, W) bool, one mask per tag in rec.tags order


def evaluate(methods: dict[str, Method], limit: int | None = None, step: int = 1) -> dict[str, dict[str, BinaryCounts]]:
    counts = {m: {s: BinaryCounts.zeros() for s in SPLITS} for m in methods}
    for k, n, rec in records(limit, step):
        valid = rec.gt != 255
        for name, fn in methods.items():
            masks = fn(rec)
            for t, m in zip(rec.tags, masks, strict=True):
                for s in split_of(k, n):
                    counts[name][s].add(t - 1, m, rec.gt == t, valid)
    return counts


def miou(c: BinaryCounts) -> float:
    return 100 * float(np.nanmean(c.iou()[c.seen]))


def per_class(b: BinaryCounts, digits: int = 0) -> str:
    """Per seen class: IoU (%) and predicted / true area, the line the tag scripts print per method."""
    from model import voc

    iou = b.iou()
    ratio = (b.tp + b.fp) / np.maximum(b.tp + b.fn, 1)
    return ", ".join(f"{voc.VOC_CLASSES[i][:6]} {100 * iou[i]:.{digits}f} ({ratio[i]:.1f})" for i in range(20) if b.seen[i])


def report(counts: dict[str, dict[str, BinaryCounts]]) -> None:
    print(f"{'method':40s} " + " ".join(f"{s:>6s}" for s in SPLITS))
    for name, by in counts.items():
        print(f"{name:40s} " + " ".join(f"{miou(by[s]):6.1f}" for s in SPLITS), flush=True)
