"""Score ad-hoc engine configurations through the evaluator, without registering them.

    .venv/bin/python tools/try_configs.py "{'c320': dict(cnn_max_side=320, cam_norm='box', crop_margin=0.05, grabcut_max_side=200)}" \
        LIMIT VARIANTS THRESHOLDS [TASKS]
    e.g. ... 205 grabcut,fpf 0.5,0.6,0.7 object

Each configuration (EngineConfig keyword arguments) runs the evaluator's sweep in this
process (workers=1) over the first LIMIT images of ../shared/voc2012 and prints mIoU, fwIoU,
mAcc and the 21-class mIoU per technique, plus the wall time. This is how the candidates for
the 'default' configuration were compared (README "How a mask is made").
"""

from __future__ import annotations

import ast
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluator.report import sweep_rows
from evaluator.sweep import run_sweep
from model.config import EngineConfig

VOC = Path(__file__).resolve().parents[2] / "shared" / "voc2012" / "VOC2012"


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    # A dict literal of dict(...) calls: evaluate with only `dict` available.
    specs = eval(compile(ast.parse(argv[0], mode="eval"), "<specs>", "eval"), {"__builtins__": {}, "dict": dict})
    limit, variants = int(argv[1]), argv[2].split(",")
    thresholds = tuple(float(x) for x in argv[3].split(","))
    tasks = argv[4].split(",") if len(argv) > 4 else ["object"]
    for name, kwargs in specs.items():
        config = EngineConfig(name=name, **kwargs)
        t0 = time.perf_counter()
        res = run_sweep(VOC, config=config, tasks=tasks, thresholds=thresholds, variants=variants,
                        workers=1, cache_dir=".cache/try", limit=limit, progress=False)
        for task in tasks:
            for r in sweep_rows(res[task]):
                print(f"{name:12s} {task:6s} {r['technique']:8s} {r['t']:4s} mIoU {r['mIoU']:.1f} "
                      f"fwIoU {r['fwIoU']:.1f} mAcc {r['mAcc']:.1f} mIoU21 {r['mIoU21']:.1f}")
        print(f"{name}: {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
