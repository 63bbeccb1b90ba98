"""CVAT's interactor under each engine configuration: a box with no class, as CVAT sends it.

    .venv/bin/python tools/experiments/cvat_interactor.py [--configs featcut,reference] [--limit N] [--voc ROOT]

CVAT interactors carry no label, so ``cvat.engine.Engine.interact`` cuts the box without a CAM
(technique "grabcut": OpenCV GrabCut in ``reference`` / ``default``, featcut's own cut in
``featcut``). Every VOC object's box goes through ``Engine.interact`` itself, one Engine per
configuration on one network; printed per configuration: the mean IoU with the
object's SegmentationObject mask (void ignored) on all objects and on halves A / B (even / odd
position in the train list), and process CPU per image (set_image and the boxes, one thread).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cvat.engine import Engine
from evaluator.dataset import VocDataset
from model.cnn import CamNet
from model.config import get_config
from model.segmenter import Segmenter, mask_iou

VOC = Path(__file__).resolve().parents[3] / "shared" / "voc2012" / "VOC2012"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--configs", default="featcut,reference")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images")
    ap.add_argument("--voc", default=str(VOC))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    ds = VocDataset(a.voc)
    net = CamNet()
    names = a.configs.split(",")
    engines = {n: Engine(Segmenter(get_config(n), net=net)) for n in names}
    ious: dict[str, list[tuple[int, float]]] = {n: [] for n in names}
    cpu = dict.fromkeys(names, 0.0)
    ids = ds.ids("train")[: a.limit]
    for k, image_id in enumerate(ids):
        s = ds.load(image_id)
        for n, engine in engines.items():
            t = time.process_time()
            engine.set_image(s.image)
            masks = [engine.interact([], [], (o.box.x0, o.box.y0, o.box.x1, o.box.y1)) for o in s.objects]
            cpu[n] += time.process_time() - t
            for o, mask in zip(s.objects, masks, strict=True):
                ious[n].append((k % 2, mask_iou(mask & s.valid, (s.object_mask == o.instance) & s.valid)))
    print(f"{len(ids)} images, {len(ious[names[0]])} objects, mean IoU of a box without a class (all / A / B), CPU per image")
    for n in names:
        v = np.array([x for _, x in ious[n]])
        half = np.array([h for h, _ in ious[n]])
        b = v[half == 1].mean() if (half == 1).any() else float("nan")
        print(f"{n:10s} {v.mean():.3f} / {v[half == 0].mean():.3f} / {b:.3f}   {1000 * cpu[n] / len(ids):.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
