"""Command line: ``python -m evaluator --voc DIR --out DIR`` (see README "Evaluator")."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from model.config import get_config

from .dataset import DatasetError
from .report import write_report
from .sweep import DEFAULT_THRESHOLDS, OBJECT_VARIANTS, TASKS, run_sweep


def parse_thresholds(text: str) -> tuple[float, ...]:
    """'0.1:0.9:0.1' (start:stop:step, inclusive) or '0.3,0.6'."""
    if ":" in text:
        a, b, s = (float(x) for x in text.split(":"))
        n = int(round((b - a) / s)) + 1
        return tuple(round(a + i * s, 6) for i in range(n))
    return tuple(float(x) for x in text.split(","))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m evaluator", description=__doc__)
    ap.add_argument(
        "--voc",
        default=os.environ.get("CAMCUT_VOC", "../shared/voc2012/VOC2012"),
        help="VOC2012 folder (JPEGImages, SegmentationClass, ...)",
    )
    ap.add_argument("--split", default="train", help="ImageSets/Segmentation/<split>.txt")
    ap.add_argument("--config", default="reference", help="engine configuration name")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--variants", default=None, help=f"comma list from {','.join(OBJECT_VARIANTS)} (default: all)")
    ap.add_argument("--thresholds", default="0.1:0.9:0.1")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cache", default=".cache/cnn", help="CNN output cache folder ('' to disable)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images")
    ap.add_argument("--out", default="runs/latest")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:
        thresholds = parse_thresholds(a.thresholds) if a.thresholds else DEFAULT_THRESHOLDS
        t0 = time.perf_counter()
        results = run_sweep(
            a.voc,
            a.split,
            get_config(a.config),
            a.tasks.split(","),
            thresholds,
            a.variants.split(",") if a.variants else None,
            a.workers,
            a.cache or None,
            a.limit,
            not a.no_progress,
        )
        elapsed = time.perf_counter() - t0
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(a.out)
    cmd = "python -m evaluator " + " ".join(argv if argv is not None else sys.argv[1:])
    header = (
        f"# camcut evaluation: config `{a.config}`, split `{a.split}`\n\n"
        f"Command: `{cmd}`  \nWall time: {elapsed:.0f} s with {a.workers} worker(s).\n"
    )
    best = write_report(results, out, header=header)
    (out / "run.json").write_text(
        json.dumps({"command": cmd, "seconds": elapsed, "workers": a.workers, "config": a.config, "best": best}, indent=1)
    )
    print((out / "tables.md").read_text())
    print(f"wrote {out}/ in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
