"""How well mask scores rank masks by their true IoU: Spearman's rho on a VOC split.

    python -m evaluator.ranking --voc ../shared/voc2012/VOC2012 --config default [--limit N]

For every object (box task) and every class present (tag task; ``--tasks``) it computes the
mask with the configuration's technique, its IoU with the ground truth (void ignored), the score
the backend sends to Label Studio (``agreement=True``: agreement with a second technique,
averaged with the cut's own confidence where the configuration has ``score_confidence``), the
cheap score (mean CAM in the mask) and the sent score's two parts, and prints Spearman's rho of
each with the IoU, on all images and on halves A / B (even / odd position in the split). Annotators
sort by score to fix the worst masks first, so a higher rho means less time hunting for them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

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
    quality: list[float] = field(default_factory=list)  # the score sent
    cam: list[float] = field(default_factory=list)
    # The sent score's parts where it has them (NaN where not): the agreement with the second
    # opinion and the cut's own confidence (model/results.py agreement_score).
    agreement: list[float] = field(default_factory=list)
    confidence: list[float] = field(default_factory=list)
    half: list[int] = field(default_factory=list)  # 0 / 1: the image's even / odd position in the split

    def add(self, iou: float, sent: Any, cheap: float, half: int) -> None:
        self.iou.append(iou)
        self.quality.append(sent.score)
        self.cam.append(cheap)
        self.agreement.append(np.nan if sent.agreement is None else sent.agreement)
        self.confidence.append(np.nan if sent.confidence is None else sent.confidence)
        self.half.append(half)

    def rho(self) -> dict[str, float]:
        out = {"n": len(self.iou), "mean_iou": float(np.mean(self.iou)) if self.iou else float("nan")}
        iou, half = np.array(self.iou), np.array(self.half)
        for name in ("quality", "cam", "agreement", "confidence"):
            vals = np.array(getattr(self, name), np.float64)
            for suffix, sel in (("", np.ones(len(iou), bool)), ("_A", half == 0), ("_B", half == 1)):
                ok = sel & ~np.isnan(vals)
                out[f"rho_{name}{suffix}"] = float(spearmanr(vals[ok], iou[ok])[0]) if ok.sum() > 2 else float("nan")
        return out


def rank_scores(
    voc_root: str,
    config: EngineConfig = DEFAULT,
    split: str = "train",
    limit: int | None = None,
    progress: bool = True,
    tasks: tuple[str, ...] = ("box", "tag"),
) -> dict[str, dict[str, float]]:
    ds = VocDataset(voc_root)
    seg = Segmenter(config)
    boxes, tags = Ranking(), Ranking()
    for k, image_id in enumerate(tqdm(ds.ids(split)[:limit], desc="ranking", unit="img", disable=not progress)):
        s = ds.load(image_id)
        seg.set_image(s.image)
        v = s.valid
        for obj in s.objects if "box" in tasks else ():
            q = seg.segment_box(obj.box, obj.name, agreement=True)
            cheap = seg.segment_box(obj.box, obj.name)
            boxes.add(mask_iou(q.mask & v, (s.object_mask == obj.instance) & v), q, cheap.score, k % 2)
        for name in s.classes_present() if "tag" in tasks else ():
            q = seg.segment_class(name, agreement=True, others=s.classes_present())
            cheap = seg.segment_class(name, others=s.classes_present())
            tags.add(mask_iou(q.mask & v, (s.class_mask == voc.voc_index(name)) & v), q, cheap.score, k % 2)
    return {t: r.rho() for t, r in (("box", boxes), ("tag", tags)) if t in tasks}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m evaluator.ranking", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--voc", default=os.environ.get("CAMCUT_VOC", "../shared/voc2012/VOC2012"))
    ap.add_argument("--split", default="train")
    ap.add_argument("--config", default="default")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--tasks", default="box,tag", help="comma list from box, tag")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    a = ap.parse_args(argv)
    try:
        res = rank_scores(a.voc, get_config(a.config), a.split, a.limit, tasks=tuple(a.tasks.split(",")))
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("| prompt | masks | mean IoU | Spearman rho (half A / B): score sent | mean CAM | agreement | confidence |")
    print("|---|---|---|---|---|---|---|")
    for k, r in res.items():
        names = ("quality", "cam", "agreement", "confidence")
        cols = " | ".join(f"{r[f'rho_{n}']:.3f} ({r[f'rho_{n}_A']:.3f} / {r[f'rho_{n}_B']:.3f})" for n in names)
        print(f"| {k} | {r['n']} | {r['mean_iou']:.3f} | {cols} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"config": a.config, "split": a.split, "limit": a.limit, **res}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
