"""Issue 12 (speed): where box mode's CPU goes, and which parts of a featcut cut two threads can share.

    .venv/bin/python tools/experiments/speed_box.py [--images 30] [--mode profile|threads] [--torch-threads 1]

``profile``: the bench's box mode (bench/inproc.py: decode, set_image, segment_box(agreement=True) per
VOC box, RLE) on the first N images, one cut thread; process time of each part, per box and per
image. ``threads``: the mask cuts' own windows of those images captured, then each part of the cut
run over them on one thread and split over two (wall time, speed-up); a pure numpy control first
says whether the machine had two free cores at all (~2.0 when it had). Masks are never changed.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import model.featcut as fc
from backend.model import mask_to_rle
from bench.common import load_images
from model import graphcut
from model.cnn import CamNet
from model.config import get_config
from model.image import decode_image
from model.segmenter import Segmenter

TIMED = ("fit_gmm", "gmm_logliks", "min_cut", "potts_weights", "_zscore", "ring_geodesic", "min_cut_and_relaxed")


def _timed(acc: dict[str, float], key: Callable[..., str], f: Callable[..., Any]) -> Callable[..., Any]:
    def g(*a: Any, **k: Any) -> Any:
        t = time.process_time()
        try:
            return f(*a, **k)
        finally:
            name = key(*a, **k)
            acc[name] = acc.get(name, 0.0) + time.process_time() - t

    return g


def _label(text: str) -> Callable[..., str]:
    return lambda *a, **k: text


def profile(images: list, seg: Segmenter) -> None:
    acc: dict[str, float] = {}
    seg.set_image = _timed(acc, _label("set_image (decode excluded)"), seg.set_image)  # type: ignore[method-assign]
    seg._segment_box = _timed(acc, lambda *a, **k: "box: second opinion" if k.get("score") else "box: mask", seg._segment_box)  # type: ignore[method-assign]
    for n in TIMED:
        setattr(fc, n, _timed(acc, _label("  " + n), getattr(fc, n)))
    for im in images[:2]:  # warm-up, untimed
        _box(seg, im)
    acc.clear()
    c0 = time.process_time()
    for im in images:
        _box(seg, im)
    total = time.process_time() - c0
    boxes = sum(len(im.objects) for im in images)
    cpu = total / len(images) * 1e3
    print(f"{len(images)} images, {boxes} boxes, torch threads {torch.get_num_threads()}: CPU {cpu:.1f} ms per image")
    print("| part (process time) | CPU per box (ms) | CPU per image (ms) |\n|---|---:|---:|")
    for k, v in sorted(acc.items(), key=lambda kv: -kv[1]):
        print(f"| {k} | {v / boxes * 1e3:.2f} | {v / len(images) * 1e3:.1f} |")


def _box(seg: Segmenter, im: Any) -> None:
    seg.set_image(decode_image(im.jpeg))
    for name, box in im.objects:
        mask_to_rle(seg.segment_box(box, name, agreement=True).mask)


def _split(fn: Callable[[Any], Any], items: list, threads: int) -> float:
    def loop(part: list) -> None:
        for p in part:
            fn(p)

    ts = [threading.Thread(target=loop, args=(items[i::threads],)) for i in range(threads)]
    t0 = time.perf_counter()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.perf_counter() - t0


def threads(images: list, seg: Segmenter) -> None:
    windows: list[tuple[np.ndarray, np.ndarray]] = []
    real = fc.FeatCut.cut

    def spy(self: fc.FeatCut, image: np.ndarray, init: np.ndarray, *a: Any, **k: Any) -> np.ndarray:
        if not (a[8] if len(a) > 8 else k.get("score", False)):  # the mask's own cut, not the score's
            windows.append((image.copy(), init.copy()))
        return real(self, image, init, *a, **k)

    fc.FeatCut.cut = spy  # type: ignore[method-assign]
    for im in images:
        _box(seg, im)
    fc.FeatCut.cut = real  # type: ignore[method-assign]
    core = fc.FeatCut()
    pre = []
    for img, init in windows:
        lab = cv2.cvtColor(img.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
        fz = fc._zscore(lab)
        step = max(1, int(np.ceil(np.sqrt(init.size / fc.MAX_FIT_SAMPLES))))
        xs, y = fz[::step, ::step].reshape(-1, 3), (init != 0)[::step, ::step].ravel()
        ws = np.ones(len(y), np.float32)
        fg, bg = graphcut.fit_gmm(xs[y], ws[y]), graphcut.fit_gmm(xs[~y], ws[~y])
        z = np.clip(np.subtract(*graphcut.gmm_logliks(fz, fg, bg)), -30, 30)
        pre.append({"img": img, "init": init, "lab": lab, "fz": fz, "xs": xs, "y": y, "ws": ws, "fg": fg, "bg": bg, "z": z})
    big = np.random.default_rng(0).random(2_000_000)
    parts: dict[str, Callable[[dict], Any]] = {
        "control: numpy exp of 2M values": lambda p: np.exp(big),
        "whole mask cut (FeatCut.cut)": lambda p: (core._windows.clear(), core.cut(p["img"], p["init"])),
        "Lab + z-score": lambda p: fc._zscore(cv2.cvtColor(p["img"].astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)),
        "Potts weights": lambda p: graphcut.potts_weights(p["lab"], 4.0),
        "2 GMM fits (torch)": lambda p: (
            graphcut.fit_gmm(p["xs"][p["y"]], p["ws"][p["y"]]),
            graphcut.fit_gmm(p["xs"][~p["y"]], p["ws"][~p["y"]]),
        ),
        "GMM likelihoods (torch)": lambda p: graphcut.gmm_logliks(p["fz"], p["fg"], p["bg"]),
        "min_cut (PyMaxflow)": lambda p: graphcut.min_cut(
            np.logaddexp(0, -p["z"]), np.logaddexp(0, p["z"]), graphcut.potts_weights(p["lab"], 4.0), None, p["init"] == 0
        ),
    }
    print(f"{len(pre)} mask-cut windows of {len(images)} images, torch threads {torch.get_num_threads()}")
    print("| part | one thread (ms a window) | two threads (ms a window, wall) | speed-up |\n|---|---:|---:|---:|")
    items = pre * 3
    for name, fn in parts.items():
        _split(fn, pre[:4], 1)
        one, two = _split(fn, items, 1), _split(fn, items, 2)
        print(f"| {name} | {one / len(items) * 1e3:.2f} | {two / len(items) * 1e3:.2f} | {one / two:.2f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--voc", default=str(Path(__file__).resolve().parents[3] / "shared/voc2012/VOC2012"))
    ap.add_argument("--images", type=int, default=30, help="first N images of the split (the bench's 30)")
    ap.add_argument("--mode", choices=("profile", "threads"), default="profile")
    ap.add_argument("--torch-threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.torch_threads)
    cv2.setNumThreads(1)
    images = load_images(a.voc, a.images)
    seg = Segmenter(get_config("featcut"), net=CamNet(), threads=1)
    (profile if a.mode == "profile" else threads)(images, seg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
