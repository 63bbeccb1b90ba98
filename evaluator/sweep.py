"""The threshold sweep: both tasks, every technique, class-wise binary and 21-class metrics."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from model import voc
from model.cnn import CnnOutput
from model.config import REFERENCE, EngineConfig
from model.segmenter import Segmenter
from model.techniques import Technique

from .dataset import VocDataset, VocSample
from .metrics import BinaryCounts, Confusion

DEFAULT_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))
OBJECT_VARIANTS = ("grabcut", "cam", "pfpb", "fpf", "fpb")
CLASS_VARIANTS = ("cam", "pfpb", "fpf", "fpb")  # naked GrabCut needs a box
TASKS = ("object", "class")


def techniques_for(
    task: str, thresholds: Iterable[float] = DEFAULT_THRESHOLDS, variants: Iterable[str] | None = None
) -> list[Technique]:
    chosen = tuple(variants) if variants else (OBJECT_VARIANTS if task == "object" else CLASS_VARIANTS)
    out: list[Technique] = []
    for v in chosen:
        if v == "grabcut":
            if task == "object":
                out.append(Technique("grabcut"))
        else:
            out.extend(Technique(v, float(t)) for t in thresholds)
    return out


@dataclass
class Scores:
    """Accumulated metrics per technique label for one task."""

    binary: dict[str, BinaryCounts] = field(default_factory=dict)
    confusion: dict[str, Confusion] = field(default_factory=dict)
    fallbacks: dict[str, int] = field(default_factory=dict)

    def merge(self, other: Scores) -> None:
        for k, v in other.binary.items():
            if k in self.binary:
                self.binary[k] += v
            else:
                self.binary[k] = v
        for k, c in other.confusion.items():
            if k in self.confusion:
                self.confusion[k] += c
            else:
                self.confusion[k] = c
        for k, n in other.fallbacks.items():
            self.fallbacks[k] = self.fallbacks.get(k, 0) + n


class CnnCache:
    """CNN outputs on disk, keyed by image bytes, weights, class table and CNN input size."""

    def __init__(self, directory: str | Path | None, weights_sha: str, config: EngineConfig) -> None:
        self.dir = Path(directory) if directory else None
        self.salt = f"{weights_sha}:{voc.MAPPING_VERSION}:{config.cnn_max_side}:{config.cam_context}".encode()
        if self.dir:
            self.dir.mkdir(parents=True, exist_ok=True)

    def _path(self, image: np.ndarray) -> Path | None:
        if not self.dir:
            return None
        h = hashlib.sha256(self.salt)
        h.update(str(image.shape).encode())
        h.update(image.tobytes())
        return self.dir / f"{h.hexdigest()[:32]}.npz"

    def get(self, image: np.ndarray) -> CnnOutput | None:
        p = self._path(image)
        if p is None or not p.is_file():
            return None
        try:
            with np.load(p) as z:
                return CnnOutput(logits=z["logits"], voc_cams=z["voc_cams"])
        except Exception:
            return None  # a torn file from an interrupted run is recomputed

    def put(self, image: np.ndarray, out: CnnOutput) -> None:
        p = self._path(image)
        if p is None:
            return
        tmp = p.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, logits=out.logits, voc_cams=out.voc_cams)
        os.replace(tmp, p)  # atomic: a concurrent reader sees the old or the new file


def evaluate_sample(
    seg: Segmenter, sample: VocSample, tasks: Iterable[str], techniques: dict[str, list[Technique]]
) -> dict[str, Scores]:
    """Run every technique of every task on one image (its CNN output already set)."""
    out: dict[str, Scores] = {}
    valid = sample.valid
    for task in tasks:
        sc = Scores()
        for tech in techniques[task]:
            counts = BinaryCounts.zeros()
            labels = np.zeros(sample.class_mask.shape, np.uint8)
            if task == "object":
                # Paint larger objects first so a small object in front of a large one survives.
                order = sorted(sample.objects, key=lambda o: -(o.box.x1 - o.box.x0) * (o.box.y1 - o.box.y0))
                for obj in order:
                    r = seg.segment_box(obj.box, obj.name, tech)
                    ci = voc.voc_index(obj.name) - 1
                    counts.add(ci, r.mask, sample.object_mask == obj.instance, valid)
                    labels[r.mask] = ci + 1
                    if r.fallback:
                        sc.fallbacks[r.fallback] = sc.fallbacks.get(r.fallback, 0) + 1
            else:
                best = np.zeros(sample.class_mask.shape, np.float32)
                for name in sample.classes_present():
                    r = seg.segment_class(name, tech, others=sample.classes_present())
                    ci = voc.voc_index(name) - 1
                    counts.add(ci, r.mask, sample.class_mask == ci + 1, valid)
                    # A pixel claimed by several classes goes to the one with the highest CAM.
                    cam, _ = seg.class_cam(name)
                    win = r.mask & (cam >= best)
                    labels[win] = ci + 1
                    best[win] = cam[win]
                    if r.fallback:
                        sc.fallbacks[r.fallback] = sc.fallbacks.get(r.fallback, 0) + 1
            conf = Confusion.zeros()
            conf.add(labels, sample.class_mask, valid)
            sc.binary[tech.label] = counts
            sc.confusion[tech.label] = conf
        out[task] = sc
    return out


# -- worker processes ------------------------------------------------------------------------
_W: dict = {}


def _init_worker(
    voc_root: str,
    config: EngineConfig,
    cache_dir: str | None,
    tasks: tuple[str, ...],
    techniques: dict[str, list[Technique]],
    pool: bool = True,
) -> None:
    if pool:  # one thread per worker process: the pool itself fills the cores
        torch.set_num_threads(1)
        cv2.setNumThreads(1)
    seg = Segmenter(config)
    _W.update(
        ds=VocDataset(voc_root),
        seg=seg,
        cache=CnnCache(cache_dir, seg.net.weights.sha256, seg.config),
        tasks=tasks,
        techniques=techniques,
    )


def _work(image_id: str) -> tuple[str, dict[str, Scores]]:
    sample = _W["ds"].load(image_id)
    seg: Segmenter = _W["seg"]
    cache: CnnCache = _W["cache"]
    cnn = cache.get(sample.image)
    out = seg.set_image(sample.image, cnn)
    if cnn is None:
        cache.put(sample.image, out)
    return image_id, evaluate_sample(seg, sample, _W["tasks"], _W["techniques"])


def run_sweep(
    voc_root: str | Path,
    split: str = "train",
    config: EngineConfig = REFERENCE,
    tasks: Iterable[str] = TASKS,
    thresholds: Iterable[float] = DEFAULT_THRESHOLDS,
    variants: Iterable[str] | None = None,
    workers: int = 1,
    cache_dir: str | Path | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Scores]:
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of images, got {limit}")
    ds = VocDataset(voc_root)
    ids = ds.ids(split)[:limit]
    tasks = tuple(tasks)
    for t in tasks:
        if t not in TASKS:
            raise ValueError(f"unknown task {t!r}; expected {TASKS}")
    thresholds = tuple(thresholds)
    techs = {t: techniques_for(t, thresholds, variants) for t in tasks}
    totals = {t: Scores() for t in tasks}
    args = (str(ds.root), config, str(cache_dir) if cache_dir else None, tasks, techs)
    bar = tqdm(total=len(ids), desc=f"sweep {config.name}", unit="img", disable=not progress)
    if workers <= 1:
        _init_worker(*args, pool=False)
        results = map(_work, ids)
        for _, res in results:
            for t in tasks:
                totals[t].merge(res[t])
            bar.update()
    else:
        with get_context("spawn").Pool(workers, initializer=_init_worker, initargs=args) as pool:
            for _, res in pool.imap_unordered(_work, ids):
                for t in tasks:
                    totals[t].merge(res[t])
                bar.update()
    bar.close()
    return totals
