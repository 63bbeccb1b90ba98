"""Issue 12 (boxes): can a box's own score pick, per object, the better of several featcut variants?

    .venv/bin/python tools/experiments/box_select.py [--out OUT.json] [--limit N] --variant base: --variant ffc5:fit_fg_cam=0.5
    .venv/bin/python tools/experiments/box_select.py --out OUT.json --analyse

Run: every VOC object's box through the engine's own path (``Segmenter.segment_boxes(agreement=True)``,
the featcut preset), once per FeatCutParams variant (the Segmenter's cut swapped, the image's CNN pass
and hypercolumns shared), recording per object its counts against the ground truth (void ignored,
``evaluator.metrics.BinaryCounts``), the class, and the served score with its two parts (agreement
with the second opinion, the cut's confidence). Analyse: the report's class-wise binary mIoU of each
variant, of the per-object oracle, and of picking per object the variant with the highest score / confidence / agreement, per half
(A = even, B = odd position in the train list). Masks served are never changed by this script.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from evaluator.dataset import VocDataset
from evaluator.metrics import BinaryCounts
from model import voc
from model.config import get_config
from model.featcut import FeatCutCut
from model.prompts import BoxPrompt
from model.segmenter import Segmenter
from tools.experiments.featcut_box import VOC_ROOT, make_params, parse_variant


def run(voc_root: str, variants: list[tuple[str, dict]], limit: int | None) -> list[dict]:
    torch.set_num_threads(1)
    ds = VocDataset(voc_root)
    seg = Segmenter(get_config("featcut"))
    cutters = {name: FeatCutCut(make_params(kw)) for name, kw in variants}
    rows = []
    for k, image_id in enumerate(ds.ids("train")[:limit]):
        s = ds.load(image_id)
        seg.set_image(s.image)
        valid = s.valid
        for name, cutter in cutters.items():
            seg.cutter = cutter
            res = seg.segment_boxes([BoxPrompt(o.box, o.name) for o in s.objects], agreement=True)
            for o, r in zip(s.objects, res, strict=True):
                if isinstance(r, Exception):
                    raise r
                c = BinaryCounts.zeros()
                ci = voc.voc_index(o.name) - 1
                c.add(ci, r.mask, s.object_mask == o.instance, valid)
                rows.append(
                    dict(
                        image=image_id,
                        half=k % 2,
                        instance=o.instance,
                        cls=o.name,
                        variant=name,
                        tp=int(c.tp[ci]),
                        fp=int(c.fp[ci]),
                        fn=int(c.fn[ci]),
                        score=float(r.score),
                        confidence=float(r.confidence or 0.0),
                        agreement=float(r.agreement or 0.0),
                    )
                )
        print(k, image_id, flush=True)
    return rows


def miou(picks: list[dict]) -> float:
    """The report's class-wise binary mIoU (evaluator.metrics) of the picked objects' counts."""
    c = BinaryCounts.zeros()
    for r in picks:
        ci = voc.voc_index(r["cls"]) - 1
        c.tp[ci] += r["tp"]
        c.fp[ci] += r["fp"]
        c.fn[ci] += r["fn"]
    return c.summary()["mIoU"] * 100


def analyse(rows: list[dict]) -> None:
    by: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        by.setdefault((r["image"], r["instance"]), {})[r["variant"]] = r
    names = list(next(iter(by.values())))
    rules = {f"variant {n}": (lambda d, n=n: d[n]) for n in names}
    rules["oracle"] = lambda d: max(d.values(), key=lambda r: r["tp"] / max(r["tp"] + r["fp"] + r["fn"], 1))
    for key in ("score", "confidence", "agreement"):
        rules[f"pick by {key}"] = lambda d, key=key: max(d.values(), key=lambda r: r[key])
    print(f"{'rule':28s} {'all':>6s} {'A':>6s} {'B':>6s}  picks")
    for rule, f in rules.items():
        picks = [f(d) for d in by.values()]
        halves = [miou([p for p in picks if p["half"] == h]) for h in (0, 1)]
        counts = {n: sum(p["variant"] == n for p in picks) for n in names}
        print(f"{rule:28s} {miou(picks):6.2f} {halves[0]:6.2f} {halves[1]:6.2f}  {counts}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None, help="JSON file of the per-object records (written, or read with --analyse)")
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--voc", default=VOC_ROOT)
    ap.add_argument("--analyse", action="store_true", help="only analyse the records of --out")
    a = ap.parse_args()
    if a.analyse:
        rows = json.loads(Path(a.out).read_text())
    else:
        rows = run(a.voc, [parse_variant(v) for v in a.variant or ["base:"]], a.limit)
        if a.out:
            Path(a.out).write_text(json.dumps(rows))
    analyse(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
