"""The tag figure through the engine itself: evaluator.sweep.evaluate_sample with `default`,
`default` + class_tagprop=True and + class_tag_scales=(1.5,) (featcut's tag path) on the 205 VOC
images, both halves (PF PB 0.3, GT tags).

    .venv/bin/python tools/experiments/tags_engine.py [STEP]
"""

from __future__ import annotations

import dataclasses
import sys

import cv2
import torch
from tags_cache import VOC_ROOT, ids
from tags_common import ROOT, SPLITS, miou, split_of

sys.path.insert(0, str(ROOT))
from evaluator.dataset import VocDataset
from evaluator.metrics import BinaryCounts
from evaluator.sweep import evaluate_sample
from model.config import get_config
from model.segmenter import Segmenter
from model.techniques import Technique


def main() -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    step = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    today = Segmenter(get_config("default"))
    tagprop = Segmenter(dataclasses.replace(get_config("default"), class_tagprop=True), net=today.net)
    scaled = Segmenter(dataclasses.replace(get_config("default"), class_tagprop=True, class_tag_scales=(1.5,)), net=today.net)
    ds, all_ids = VocDataset(VOC_ROOT), ids()
    tech = {"class": [Technique("pfpb", 0.3)]}
    counts = {
        n: {s: BinaryCounts.zeros() for s in SPLITS} for n in ("default", "default + class_tagprop", "+ class_tag_scales (1.5,)")
    }
    for k in range(0, len(all_ids), step):
        sample = ds.load(all_ids[k])
        cnn = today.set_image(sample.image)
        tagprop.set_image(sample.image, cnn)
        scaled.set_image(sample.image, cnn)
        for name, seg in zip(counts, (today, tagprop, scaled), strict=True):
            got = evaluate_sample(seg, sample, ("class",), tech)["class"].binary[tech["class"][0].label]
            for s in split_of(k, len(all_ids)):
                counts[name][s] += got
    print(f"{'config':28s} " + " ".join(f"{s:>6s}" for s in SPLITS))
    for name, by in counts.items():
        print(f"{name:28s} " + " ".join(f"{miou(by[s]):6.1f}" for s in SPLITS))


if __name__ == "__main__":
    main()
