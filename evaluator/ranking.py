"""How well mask scores rank masks by their true IoU: Spearman's rho on a VOC split.

    python -m evaluator.ranking --voc ../shared/voc2012/VOC2012 --config default [--limit N]

For every object (box task) and every class present (tag task) it computes the mask with the
configuration's technique, its IoU with the ground truth (void ignored), the score the backend
sends to Label Studio (``agreement=True``: agreement with a second technique) and the cheap score
(mean CAM in the mask), and prints Spearman's rho of each score with the IoU. Annotators sort
by score to fix the worst masks first, so a higher rho means less time hunting for them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field

import numpy as np
from scipy.stats import spearmanr
from tqdm import tqdm

from model import voc
from model.config import DEFAULT, EngineConfig, get_config
from model.segmenter import Segmenter, mask_iou

from .dataset import DatasetError, VocDataset


@dataclass
class Ranking:
    iou: list[float] = field(default_factory=list)
    quality: list[float] = field(default_factory=list)
    cam: list[float] = field(default_factory=list)

    def rho(self) -> dict[str, float]:
        out = {"n": len(self.iou), "mean_iou": float(np.mean(self.iou)) if self.iou else float("nan")}
        for name in ("quality", "cam"):
            vals = getattr(self, name)
            out[f"rho_{name}"] = float(spearmanr(vals, self.iou)[0]) if len(vals) > 2 else float("nan")
        return out


def rank_scores(
    voc_root: str, config: EngineConfig = DEFAULT, split: str = "train", limit: int | None = None, progress: bool = True
) -> dict[str, dict[str, float]]:
    ds = VocDataset(voc_root)
    seg = Segmenter(config)
    boxes, tags = Ranking(), Ranking()
    for image_id in tqdm(ds.ids(split)[:limit], desc="ranking", unit="img", disable=not progress):
        s = ds.load(image_id)
        seg.set_image(s.image)
        v = s.valid
        for obj in s.objects:
            q = seg.segment_box(obj.box, obj.name, agreement=True)
            cheap = seg.segment_box(obj.box, obj.name)
            boxes.iou.append(mask_iou(q.mask & v, (s.object_mask == obj.instance) & v))
            boxes.quality.append(q.score)
            boxes.cam.append(cheap.score)
        for name in s.classes_present():
            q = seg.segment_class(name, agreement=True, others=s.classes_present())
            cheap = seg.segment_class(name, others=s.classes_present())
            tags.iou.append(mask_iou(q.mask & v, (s.class_mask == voc.voc_index(name)) & v))
            tags.quality.append(q.score)
            tags.cam.append(cheap.score)
    return {"box": boxes.rho(), "tag": tags.rho()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m evaluator.ranking", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--voc", default=os.environ.get("CAMCUT_VOC", "../shared/voc2012/VOC2012"))
    ap.add_argument("--split", default="train")
    ap.add_argument("--config", default="default")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    a = ap.parse_args(argv)
    try:
        res = rank_scores(a.voc, get_config(a.config), a.split, a.limit)
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("| prompt | masks | mean IoU | Spearman rho, backend score (second opinion) | Spearman rho, mean CAM |")
    print("|---|---|---|---|---|")
    for k, r in res.items():
        print(f"| {k} | {r['n']} | {r['mean_iou']:.3f} | {r['rho_quality']:.3f} | {r['rho_cam']:.3f} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"config": a.config, "split": a.split, "limit": a.limit, **res}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
