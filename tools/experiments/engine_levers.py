"""Issue 12 (session 15): three engine settings outside FeatCutParams, through the box and clicks tasks.

    CROP_MARGIN=0.2 .venv/bin/python tools/experiments/engine_levers.py box --out runs/X.json --variant base:
    UPSCALE=2       .venv/bin/python tools/experiments/engine_levers.py clicks --workers 2 --out runs/X
    DISK_R=2        .venv/bin/python tools/experiments/engine_levers.py clicks --workers 2 --out runs/X

``box``: tools/experiments/box_select.py (every VOC box through ``Segmenter.segment_boxes``, mIoU all
/ A / B); ``clicks``: ``python -m evaluator.clicks --configs featcut`` (tools/experiments/clicks_crop.py's
runner). What the environment changes, in this process and in the clicks task's spawned workers
(the patches run at import):

* ``CROP_MARGIN``: the featcut preset's box window margin (``EngineConfig.crop_margin``, 0.10 served).
* ``UPSCALE``: a box window smaller than the cut's working size is cut upsampled, by at most this
  factor (served: never upsampled, ``model.cut.windowed_cut`` scales only down). A thin part's
  boundary grows by the factor and its area by the square, so the Potts term weighs less on it.
* ``DISK_R``: every click's hard disk has this radius in image pixels (served: ``model.prompts.Seeds``,
  max(3 px, 1% of the shorter side)).

``ceiling OBJECTS.jsonl``: for each object of a clicks run (``--out``'s objects.jsonl) that never
reached 0.85 IoU, its ground truth taken down to the cut's working size (160 / 240 / 320 px for the
box's window, INTER_AREA) and back up (INTER_LINEAR): the best IoU a cut at that size could reach.

Nothing served changes; the README's ablation row "session 15" quotes the runs.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from model import config as engine_config
from model import cut as cut_module
from model import prompts
from model import segmenter as segmenter_module


def _patch_margin(margin: float) -> None:
    base = engine_config.get_config

    def get_config(name: str) -> Any:
        return dataclasses.replace(base(name), crop_margin=margin) if name == "featcut" else base(name)

    for mod in (engine_config, box_select, clicks):  # each holds its own name for it
        mod.get_config = get_config  # type: ignore[attr-defined]


def _patch_upscale(factor: float) -> None:
    # The served function with its one scale rule changed, so everything else is the engine's.
    src = textwrap.dedent(inspect.getsource(cut_module.windowed_cut))
    old = "scale = 1.0 if max_side is None else min(1.0, max_side / max(sh, sw))"
    if old not in src or "if scale < 1.0:" not in src:
        raise SystemExit("model/cut.py windowed_cut changed: update this patch")
    src = src.replace(old, f"scale = 1.0 if max_side is None else min({factor!r}, max_side / max(sh, sw))")
    src = src.replace("if scale < 1.0:", "if scale != 1.0:")
    ns: dict[str, Any] = {}
    exec(compile(src, cut_module.__file__, "exec"), cut_module.__dict__, ns)  # our own source
    cut_module.windowed_cut = ns["windowed_cut"]  # type: ignore[attr-defined]
    segmenter_module.windowed_cut = ns["windowed_cut"]  # type: ignore[attr-defined]


def _patch_disk(radius: int) -> None:
    def rasterize(self: prompts.Seeds, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        pos = np.zeros((height, width), np.uint8)
        neg = np.zeros((height, width), np.uint8)
        for pts, m in ((self.positive_points, pos), (self.negative_points, neg)):
            for x, y in pts:
                if 0 <= x < width and 0 <= y < height:
                    cv2.circle(m, (int(x), int(y)), radius, 1, thickness=-1)
        p, n = pos.astype(bool), neg.astype(bool)
        prompts.split_click_overlap(p, n, self.positive_points, self.negative_points, radius)
        p &= ~n
        return p, n

    prompts.Seeds.rasterize = rasterize  # type: ignore[method-assign]


if os.environ.get("UPSCALE"):
    _patch_upscale(float(os.environ["UPSCALE"]))
if os.environ.get("DISK_R"):
    _patch_disk(int(os.environ["DISK_R"]))

import box_select  # noqa: E402  # after the patches of the modules it imports from
from clicks_crop import run_clicks  # noqa: E402

from evaluator import clicks  # noqa: E402

if os.environ.get("CROP_MARGIN"):
    _patch_margin(float(os.environ["CROP_MARGIN"]))


def ceiling(objects: Path, sides: tuple[int, ...] = (160, 240, 320), level: float = 0.85) -> None:
    import json

    from evaluator.dataset import VocDataset
    from model.featcut import grow
    from tools.experiments.featcut_box import VOC_ROOT

    ds = VocDataset(VOC_ROOT)
    rows = [json.loads(line) for line in objects.read_text().splitlines() if line.strip()]
    print(f"| image | object | class | window | ground truth at {' / '.join(map(str, sides))} px | best IoU of the run |")
    print("|---|---:|---|---|---|---:|")
    for r in (r for r in rows if max(r["ious"]) < level):
        s = ds.load(r["image_id"])
        o = next(o for o in s.objects if o.instance == r["instance"])
        gt, ok = s.object_mask == r["instance"], s.valid
        h, w = gt.shape
        x0, y0, x1, y1 = (int(v) for v in grow((int(o.box.x0), int(o.box.y0), int(o.box.x1), int(o.box.y1)), 0.10, w, h))
        crop = gt[y0:y1, x0:x1].astype(np.float32)
        out = []
        for side in sides:
            sc = min(1.0, side / max(x1 - x0, y1 - y0))
            small = cv2.resize(crop, (max(1, round((x1 - x0) * sc)), max(1, round((y1 - y0) * sc))), interpolation=cv2.INTER_AREA)
            m = np.zeros_like(gt)
            m[y0:y1, x0:x1] = cv2.resize((small > 0.5).astype(np.float32), (x1 - x0, y1 - y0)) > 0.5
            out.append(clicks.iou(m, gt, ok))  # the clicks task's own IoU (void ignored)
        ious = " / ".join(f"{v:.3f}" for v in out)
        print(f"| {r['image_id']} | {r['instance']} | {r['voc_class']} | {x1 - x0}x{y1 - y0} | {ious} | {max(r['ious']):.3f} |")


def main(argv: list[str]) -> int:
    if argv and argv[0] == "ceiling" and len(argv) > 1:
        ceiling(Path(argv[1]))
        return 0
    if not argv or argv[0] not in ("box", "clicks"):
        print(__doc__)
        print(
            "usage: engine_levers.py box|clicks [ARGS of box_select.py | of python -m evaluator.clicks] | ceiling OBJECTS.jsonl"
        )
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "clicks":
        return run_clicks(argv[1:])
    sys.argv = [sys.argv[0], *argv[1:]]
    return box_select.main()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
