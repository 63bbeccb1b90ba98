"""Issue 14: would a project gain from choosing, per class, the featcut variant its corrections
score best? Reads the ``--json`` of tools/experiments/featcut_box.py (class IoU per half) and, in
each direction, picks per class on one half the variant whose class IoU beats ``base`` by more than
DELTA (IoU, 0-1), then scores those picks on the other half, beside ``base`` and the other half's
own per-class best (an oracle: what a perfect choice would give).

    .venv/bin/python tools/experiments/box_perclass.py RUN.json [VARIANT,VARIANT,...] [DELTA]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def miou(class_iou: dict, seen: list[bool], picks: list[str], half: str) -> float:
    return 100 * float(np.nanmean([class_iou[picks[c]][half][c] for c in range(len(picks)) if seen[c]]))


def main(argv: list[str]) -> int:
    run = json.loads(Path(argv[0]).read_text())
    ci, seen = run["class_iou"], run["seen"]["base"]
    names = argv[1].split(",") if len(argv) > 1 else list(ci)
    delta = float(argv[2]) if len(argv) > 2 else 0.0
    n = len(seen["2"])
    for src, dst in (("0", "1"), ("1", "0")):
        picks = []
        for c in range(n):
            best, value = "base", ci["base"][src][c]
            for name in names:
                if ci[name][src][c] > value + delta:
                    best, value = name, ci[name][src][c]
            picks.append(best)
        oracle = [max(names + ["base"], key=lambda k, c=c: ci[k][dst][c]) for c in range(n)]
        base, chosen = miou(ci, seen[dst], ["base"] * n, dst), miou(ci, seen[dst], picks, dst)
        changed = sum(p != "base" for p in picks)
        print(
            f"learn {'AB'[int(src)]} -> score {'AB'[int(dst)]}: base {base:.1f}, per-class picks {chosen:.1f} "
            f"({chosen - base:+.1f}), oracle {miou(ci, seen[dst], oracle, dst):.1f}; {changed} classes changed: {picks}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
