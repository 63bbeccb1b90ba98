"""Section 5: quality of each configuration's own default techniques on the benchmark's images.

``evaluator.sweep.run_sweep`` with the configuration's box technique (object task) and class
technique (class task) only, one worker per core, no CNN cache unless asked. Figures are the
evaluator's class-wise binary mIoU (report formula 6), in percent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluator.sweep import run_sweep
from model.config import EngineConfig
from model.techniques import Technique

from .common import cores


def _one(voc: str | Path, config: EngineConfig, task: str, tech: Technique, limit: int, workers: int, cache: str | None) -> dict[str, Any]:
    res = run_sweep(voc, "train", config, tasks=(task,), thresholds=(tech.t,) if tech.t is not None else (0.5,),
                    variants=(tech.variant,), workers=workers, cache_dir=cache, limit=limit, progress=False)
    counts = res[task].binary[tech.label]
    s = counts.summary()
    return {"technique": tech.label, "mIoU": 100.0 * s["mIoU"], "fwIoU": 100.0 * s["fwIoU"], "mAcc": 100.0 * s["mAcc"],
            "fallbacks": res[task].fallbacks}


def run_quality(voc: str | Path, config: EngineConfig, limit: int, workers: int | None = None, cache: str | None = None) -> dict[str, Any]:
    w = workers or cores()
    return {"object": _one(voc, config, "object", config.box_technique, limit, w, cache),
            "class": _one(voc, config, "class", config.class_technique, limit, w, cache)}
