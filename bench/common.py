"""Shared pieces: the benchmark's images, percentile summaries, machine description."""

from __future__ import annotations

import os
import platform
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from evaluator.dataset import VocDataset  # noqa: E402
from model.pool import available_cores  # noqa: E402
from model.prompts import Box  # noqa: E402


@dataclass(frozen=True)
class BenchImage:
    """One VOC image as the benchmark uses it: encoded bytes, boxes and GT classes."""

    image_id: str
    jpeg: bytes
    width: int
    height: int
    objects: tuple[tuple[str, Box], ...]  # (VOC class, pixel box), XML order
    classes: tuple[str, ...]  # GT classes present in SegmentationClass
    # SegmentationObject (instance k + 1 is objects[k]; 255 void): where the click mode's
    # simulated annotator clicks (evaluator/clicks.py's rule)
    object_mask: np.ndarray | None = None


def cores() -> int:
    return available_cores()


def load_images(voc_root: str | Path, limit: int | None, split: str = "train") -> list[BenchImage]:
    ds = VocDataset(voc_root)
    ids = ds.ids(split)[:limit]
    out = []
    for i in ids:
        s = ds.load(i)
        jpeg = (ds.root / "JPEGImages" / f"{i}.jpg").read_bytes()
        h, w = s.image.shape[:2]
        objs = tuple((o.name, o.box) for o in s.objects)
        out.append(BenchImage(i, jpeg, w, h, objs, tuple(s.classes_present()), s.object_mask))
    return out


def stats(samples_s: list[float]) -> dict[str, float]:
    """p50 / p95 / max in ms of one round of samples (seconds)."""
    a = np.asarray(samples_s, dtype=np.float64) * 1000.0
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "max": float(a.max())}


def summarize(rounds: list[list[float]]) -> dict:
    """Median over rounds (repeats) of each round's p50 / p95 / max, plus the pooled figures."""
    rounds = [r for r in rounds if r]
    if not rounds:
        raise ValueError("no samples")
    per = [stats(r) for r in rounds]
    pooled = stats([x for r in rounds for x in r])
    return {
        "p50": statistics.median(p["p50"] for p in per),
        "p95": statistics.median(p["p95"] for p in per),
        "max": statistics.median(p["max"] for p in per),
        "n_samples": sum(len(r) for r in rounds),
        "n_rounds": len(rounds),
        "per_round": per,
        "pooled": pooled,
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict:
    import cv2
    import torch

    mem_total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = round(int(line.split()[1]) / 1024)
    except OSError:
        pass
    return {
        "nproc": cores(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "mem_total_mb": mem_total,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads_default": torch.get_num_threads(),
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "loadavg_at_start": list(os.getloadavg()),
    }


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS / VmHWM (MB) of a process from /proc/<pid>/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(line.split()[1]) / 1024.0
    return out


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (scan of /proc/*/stat)."""
    kids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            kids.append(int(p.name))
    return sorted(kids)


def gunicorn_workers(master: int) -> list[int]:
    """The worker processes of a gunicorn master: its children but the buffering front
    (backend/front.py), which gunicorn_conf.py starts as a child of the master too."""
    out = []
    for kid in children(master):
        try:
            cmdline = Path(f"/proc/{kid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"backend.front" not in cmdline:
            out.append(kid)
    return out
