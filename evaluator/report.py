"""Tables 1 and 2 (Markdown + CSV), the full sweep as CSV, and the report's figures as PNG."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from model import voc
from model.techniques import VARIANT_LABELS, Technique

from .sweep import Scores

TASK_TITLES = {"object": "Object segmentation (from boxes)", "class": "Class segmentation (from tags)"}


def sweep_rows(scores: Scores) -> list[dict]:
    rows = []
    for label, counts in scores.binary.items():
        tech = Technique.parse(label)
        s = counts.summary()
        rows.append(
            {
                "technique": VARIANT_LABELS[tech.variant],
                "t": "" if tech.t is None else f"{tech.t:g}",
                "mIoU": 100 * s["mIoU"],
                "fwIoU": 100 * s["fwIoU"],
                "mAcc": 100 * s["mAcc"],
                "mIoU21": 100 * scores.confusion[label].miou(),
                **{f"IoU_{c}": 100 * v for c, v in zip(voc.VOC_CLASSES, counts.iou(), strict=False)},
            }
        )
    return rows


def best_rows(rows: list[dict]) -> list[dict]:
    """Best threshold per technique by class-wise binary mIoU (as the report's tables)."""
    best: dict[str, dict] = {}
    for r in rows:
        if r["technique"] not in best or r["mIoU"] > best[r["technique"]]["mIoU"]:
            best[r["technique"]] = r
    return list(best.values())


def _fmt(v: object) -> str:
    return f"{v:.1f}" if isinstance(v, float) and math.isfinite(v) else str(v)


def markdown_table(rows: list[dict], cols: tuple[str, ...] = ("technique", "t", "mIoU", "fwIoU", "mAcc", "mIoU21")) -> str:
    head = {"mIoU21": "mIoU (21-class)"}
    lines = ["| " + " | ".join(head.get(c, c) for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})


def plot_curves(rows: list[dict], metric: str, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    by_tech: dict[str, list[dict]] = {}
    for r in rows:
        by_tech.setdefault(r["technique"], []).append(r)
    for tech, rs in by_tech.items():
        if rs[0]["t"] == "":
            ax.axhline(rs[0][metric], ls="--", color="k", lw=1, label=tech)
        else:
            rs = sorted(rs, key=lambda r: float(r["t"]))
            ax.plot([float(r["t"]) for r in rs], [r[metric] for r in rs], marker="o", ms=3, label=tech)
    ax.set_xlabel("threshold t")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def nearest_threshold(rows: list[dict], t: float) -> float | None:
    """The swept threshold closest to ``t`` (None if every row is threshold-free)."""
    ts = sorted({float(r["t"]) for r in rows if r["t"] != ""})
    return min(ts, key=lambda x: abs(x - t)) if ts else None


def plot_class_iou(rows: list[dict], t: float | None, title: str, path: Path) -> None:
    chosen = [r for r in rows if r["t"] == "" or (t is not None and abs(float(r["t"]) - t) < 1e-9)]
    fig, ax = plt.subplots(figsize=(10, 4), dpi=110)
    n = len(chosen)
    width = 0.8 / max(n, 1)
    xs = range(len(voc.VOC_CLASSES))
    for k, r in enumerate(chosen):
        label = r["technique"] + ("" if r["t"] == "" else f" {r['t']}")
        ax.bar([x + k * width for x in xs], [r[f"IoU_{c}"] for c in voc.VOC_CLASSES], width, label=label)
    ax.set_xticks([x + 0.4 - width / 2 for x in xs])
    ax.set_xticklabels(voc.VOC_CLASSES, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("IoU (%)")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=min(n, 5))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(
    results: dict[str, Scores], out: Path, chosen_t: dict[str, float] | None = None, header: str = ""
) -> dict[str, list[dict]]:
    """Write everything for each task into ``out``; returns the best rows per task."""
    out.mkdir(parents=True, exist_ok=True)
    chosen_t = chosen_t or {"object": 0.6, "class": 0.3}  # the report's figures 9 and 12
    md = [header] if header else []
    best_by_task = {}
    for task, scores in results.items():
        rows = sweep_rows(scores)
        best = best_rows(rows)
        best_by_task[task] = best
        write_csv(out / f"sweep_{task}.csv", rows)
        write_csv(
            out / f"table_{task}.csv", [{k: r[k] for k in ("technique", "t", "mIoU", "fwIoU", "mAcc", "mIoU21")} for r in best]
        )
        title = TASK_TITLES[task]
        plot_curves(rows, "mIoU", f"{title}: mIoU", out / f"{task}_miou.png")
        plot_curves(rows, "mAcc", f"{title}: mAcc", out / f"{task}_macc.png")
        t_fig = nearest_threshold(rows, chosen_t[task])
        plot_class_iou(rows, t_fig, f"{title}: IoU per class, t = {t_fig}", out / f"{task}_class_iou.png")
        md.append(
            f"## {title}\n\nBest threshold per technique (class-wise binary metrics, report formulas 4-8; "
            f"21-class mIoU beside it).\n\n" + markdown_table(best)
        )
        if scores.fallbacks:
            md.append(
                "Edge-case fallbacks over the sweep: " + ", ".join(f"{k} {v}" for k, v in sorted(scores.fallbacks.items())) + "\n"
            )
    (out / "tables.md").write_text("\n".join(md))
    return best_by_task
