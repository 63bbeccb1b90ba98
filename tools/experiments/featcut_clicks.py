"""The clicks task (evaluator/clicks.py's own simulator) on featcut variants, before the engine seam.

    .venv/bin/python tools/experiments/featcut_clicks.py [--limit N] [--workers 2] --variant NAME:key=val,...

Each variant is driven through ``evaluator.clicks.run_object`` with a stand-in Segmenter whose
``segment_box(box, cls, seeds=, previous=)`` answers with the featcut core, the call the engine
will make once featcut is a preset. Prints the same table as ``python -m evaluator.clicks``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from featcut_box import VOC_ROOT, image_features, make_params, parse_variant

from evaluator.clicks import run_object, summarise, table
from evaluator.dataset import VocDataset
from model.engine import Box, CnnOutput, Seeds, Segmenter, get_config
from model.featcut import FeatCut, FeatCutParams, Prompt, segment


@dataclass
class _Res:
    mask: np.ndarray


class FeatCutSegmenter:
    """segment_box as the featcut preset will answer it (CAM from the engine's default pass)."""

    def __init__(self, seg: Segmenter, core: FeatCut, pf: object) -> None:
        self.seg, self.core, self.pf = seg, core, pf

    def segment_box(
        self,
        box: Box,
        voc_class: str,
        technique: object = None,
        seeds: Seeds | None = None,
        quality: bool = False,
        previous: np.ndarray | None = None,
    ) -> _Res:
        h, w = self.seg.image.shape[:2]
        b = box.clip(w, h)
        cam, ev = self.seg.class_cam(voc_class, b)
        pm = nm = None
        pp: tuple = ()
        npts: tuple = ()
        if seeds is not None and not seeds.is_empty():
            pm, nm = seeds.rasterize(h, w)
            pp, npts = seeds.positive_points, seeds.negative_points
        pf = self.pf if self.core.p.use_features else None
        return _Res(segment(self.core, self.seg.image, pf, Prompt(b, pp, npts, pm, nm, previous), cam if ev else None))  # type: ignore[arg-type]

    def segment_seeds(self, *a: object, **k: object) -> _Res:
        raise NotImplementedError("box start only")


_W: dict = {}


def _init(variants: list[tuple[str, dict]]) -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _W.update(ds=VocDataset(VOC_ROOT), seg=Segmenter(get_config("default")), variants=variants)


def _work(job: tuple[int, str]) -> dict[str, list]:
    k, image_id = job
    sample = _W["ds"].load(image_id)
    seg: Segmenter = _W["seg"]
    pf = image_features(seg, image_id, sample.image, 320, 8)
    seg.set_image(sample.image, CnnOutput(pf.logits, pf.cam))
    out: dict[str, list] = {}
    for name, kw in _W["variants"]:
        params: FeatCutParams = make_params(kw)
        shim = FeatCutSegmenter(seg, FeatCut(params), pf)
        out[name] = [run_object(shim, sample, o, k % 2) for o in sample.objects if np.any(sample.object_mask == o.instance)]  # type: ignore[arg-type]
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    variants = [parse_variant(v) for v in a.variant]
    ids = VocDataset(VOC_ROOT).ids("train")[: a.limit]
    t0 = time.perf_counter()
    if a.workers <= 1:
        _init(variants)
        results = map(_work, enumerate(ids))
    else:
        pool = get_context("spawn").Pool(a.workers, initializer=_init, initargs=(variants,))
        results = pool.imap_unordered(_work, enumerate(ids))
    runs: dict[str, list] = {n: [] for n, _ in variants}
    for res in results:
        for n, r in res.items():
            runs[n].extend(r)
    s = {
        n: {
            "all": summarise(r, 20),
            "A (even)": summarise([x for x in r if x.half == 0], 20),
            "B (odd)": summarise([x for x in r if x.half == 1], 20),
        }
        for n, r in runs.items()
    }
    print(f"{len(ids)} images, {time.perf_counter() - t0:.0f} s; variants: {dict(variants)}")
    print(table(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
