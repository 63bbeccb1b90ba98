"""Section 1: in-process latency, one process, as a backend worker runs: cut threads = all cores
(CAMCUT_CUT_THREADS' default), torch threads = CAMCUT_TORCH_THREADS (1 by default; 0: all cores).

Every timed call starts from the JPEG bytes where the mode implies a new image and ends with
the brush RLE of every mask (``backend.model.mask_to_rle``, the SDK's encoder), i.e. what the
backend does per task minus download, JSON and HTTP. Masks are made with ``agreement=True``
(the second-opinion score the backend sends), as the backend makes them:

* ``box``: decode + set_image + segment_box(box, its class) for every VOC box + RLE of every
  mask; one sample per image.
* ``tag``: decode + set_image + segment_classes(every GT class present) + RLE; one
  sample per image.
* ``interactive``: the image already set (untimed), one segment_box + RLE; one sample per box
  (every VOC box of every image), as an annotator drawing boxes on an open image.
* ``interactive_cold``: decode + set_image + segment_box(first VOC box) + RLE; one sample per
  image (the first box drawn on a newly opened image).
* ``click``: the image set and each box answered (untimed), then one click where the clicks
  task's annotator puts it (evaluator/clicks.py: the interior of the largest error region) +
  RLE, with the box's answer as ``previous`` for a configuration that starts from it; one
  sample per box, as an annotator correcting the mask camcut just gave (the issue's "one
  interactive click with the image set").

Configurations are interleaved round by round (round r runs every configuration), so slow
drifts of the machine hit them alike. The first ``warmup`` images of each mode are run once,
untimed, before round 1.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import cv2
import torch

from backend.config import read_setting
from backend.model import mask_to_rle
from evaluator.clicks import next_click
from model.cnn import CamNet
from model.config import EngineConfig
from model.image import decode_image
from model.prompts import Seeds
from model.segmenter import Segmenter

from .common import BenchImage, cores, summarize

MODES = ("box", "tag", "interactive", "interactive_cold", "click")


def _box(seg: Segmenter, im: BenchImage) -> list[float]:
    t0 = time.perf_counter()
    seg.set_image(decode_image(im.jpeg))
    for name, box in im.objects:
        mask_to_rle(seg.segment_box(box, name, agreement=True).mask)
    return [time.perf_counter() - t0]


def _tag(seg: Segmenter, im: BenchImage) -> list[float]:
    t0 = time.perf_counter()
    seg.set_image(decode_image(im.jpeg))
    for res in seg.segment_classes([(name, None) for name in im.classes], agreement=True):
        mask_to_rle(res.mask)  # type: ignore[union-attr]
    return [time.perf_counter() - t0]


def _interactive(seg: Segmenter, im: BenchImage) -> list[float]:
    seg.set_image(decode_image(im.jpeg))  # the session already has the image
    out = []
    for name, box in im.objects:
        t0 = time.perf_counter()
        mask_to_rle(seg.segment_box(box, name, agreement=True).mask)
        out.append(time.perf_counter() - t0)
    return out


def _cold(seg: Segmenter, im: BenchImage) -> list[float]:
    name, box = im.objects[0]
    t0 = time.perf_counter()
    seg.set_image(decode_image(im.jpeg))
    mask_to_rle(seg.segment_box(box, name, agreement=True).mask)
    return [time.perf_counter() - t0]


def _click(seg: Segmenter, im: BenchImage) -> list[float]:
    seg.set_image(decode_image(im.jpeg))
    if im.object_mask is None:
        raise ValueError(f"{im.image_id}: the click mode needs the object masks")
    valid = im.object_mask != 255
    out = []
    for k, (name, box) in enumerate(im.objects):
        truth = im.object_mask == k + 1
        answer = seg.segment_box(box, name, agreement=True).mask
        click = next_click(answer, truth, valid) if truth.any() else None
        if click is None:  # no pixels of its own, or already perfect: nothing to click
            continue
        x, y, positive = click
        seeds = Seeds(((x, y),), ()) if positive else Seeds((), ((x, y),))
        previous = answer if seg.answers_from_previous else None
        t0 = time.perf_counter()
        mask_to_rle(seg.segment_box(box, name, seeds=seeds, agreement=True, previous=previous).mask)
        out.append(time.perf_counter() - t0)
    return out


RUNNERS: dict[str, Callable[[Segmenter, BenchImage], list[float]]] = {
    "box": _box,
    "tag": _tag,
    "interactive": _interactive,
    "interactive_cold": _cold,
    "click": _click,
}


def run_inprocess(
    configs: list[EngineConfig], images: list[BenchImage], repeat: int, warmup: int = 2, log: Callable[[str], None] = print
) -> dict[str, dict[str, dict]]:
    """{config: {mode: summary}}; summaries are medians over ``repeat`` rounds (bench.common.summarize)."""
    n = cores()
    torch.set_num_threads(read_setting("CAMCUT_TORCH_THREADS") or n)  # the worker's (backend/config.py)
    cv2.setNumThreads(n)
    net = CamNet()
    segs = {c.name: Segmenter(c, net=net, threads=n) for c in configs}
    names = list(segs)
    usable = {m: [im for im in images if (im.classes if m == "tag" else im.objects)] for m in MODES}
    for c in names:
        for m in MODES:
            for im in usable[m][:warmup]:
                RUNNERS[m](segs[c], im)
    rounds: dict[str, dict[str, list[list[float]]]] = {c: {m: [] for m in MODES} for c in names}
    for r in range(repeat):
        for c in names:
            t0 = time.perf_counter()
            for m in MODES:
                samples: list[float] = []
                for im in usable[m]:
                    samples.extend(RUNNERS[m](segs[c], im))
                rounds[c][m].append(samples)
            log(f"  in-process round {r + 1}/{repeat} {c}: {time.perf_counter() - t0:.1f} s")
    return {c: {m: summarize(rounds[c][m]) for m in MODES} for c in names}
