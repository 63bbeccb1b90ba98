"""Section 6: the side-by-side table, ratios against the baseline and pass/fail against targets."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Thresholds of the targets (only checked for the non-baseline configurations).
TARGETS = {
    "box.p50": ("<=", 50.0),
    "box.p95": ("<=", 150.0),
    "speedup.box": (">=", 5.0),
    "quality.object_miou": (">=", "baseline"),
    "interactive.p95": ("<=", 100.0),
    "click.p95": ("<=", 100.0),
    "tag.p50": ("<=", 150.0),
    "http_overhead.box": ("<=", 10.0),
    "memory.rss_peak": ("<=", 500.0),
    # "flat": no growth over the second half of the soak (1 MB of slack for page rounding);
    # the first half includes the warm-up of caches and malloc arenas.
    "memory.rss_growth_second_half": ("<=", 1.0),
}


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    ratio: bool = True  # a cfg / baseline ratio is reported
    digits: int = 1


def _lat(prefix: str, what: str) -> list[Metric]:
    return [Metric(f"{prefix}.{s}", f"{what} {s}", "ms") for s in ("p50", "p95", "max")]


METRICS: list[Metric] = [
    *_lat("box", "Box mode (decode+CNN+all boxes+RLE)"),
    Metric("speedup.box", "Box mode speed-up vs baseline (p50)", "x", ratio=False, digits=2),
    *_lat("tag", "Tag mode (decode+CNN+GT classes+RLE)"),
    *_lat("interactive", "Interactive box, image set (box+RLE)"),
    *_lat("interactive_cold", "Interactive box, cold (decode+CNN+box+RLE)"),
    *_lat("click", "Interactive click on the box's answer, image set (click+RLE)"),
    *_lat("http_box", "HTTP /predict, boxes"),
    *_lat("http_tag", "HTTP /predict, tags"),
    *_lat("http_interactive", "HTTP /predict, interactive box"),
    Metric("http_overhead.box", "HTTP overhead, boxes (per request: latency - server compute, p50)", "ms"),
    Metric("http_overhead.tag", "HTTP overhead, tags (per request: latency - server compute, p50)", "ms"),
    Metric("http_overhead.interactive", "HTTP overhead, interactive (per request: latency - server compute, p50)", "ms"),
    Metric("throughput.images_per_s", "Throughput, box mode, all cores", "img/s", digits=2),
    Metric("memory.rss_peak", "Server worker peak RSS (VmHWM)", "MB"),
    Metric("memory.rss_after_50", "Server worker RSS after 50 requests", "MB"),
    Metric("memory.rss_after_soak", "Server worker RSS after the soak", "MB"),
    Metric("memory.rss_growth", "RSS growth over the soak (after request 50 to the end)", "MB", ratio=False),
    Metric("memory.rss_growth_second_half", "RSS growth over the second half of the soak", "MB", ratio=False),
    Metric("quality.object_miou", "Object mIoU (box technique)", "%", digits=2),
    Metric("quality.class_miou", "Class mIoU (class technique)", "%", digits=2),
]


def flatten(section_results: dict[str, dict[str, Any]], baseline: str) -> dict[str, dict[str, float]]:
    """{config: {metric key: value}} from the raw section results of each configuration."""
    out: dict[str, dict[str, float]] = {}
    for cfg, res in section_results.items():
        v: dict[str, float] = {}
        for mode in ("box", "tag", "interactive", "interactive_cold", "click", "http_box", "http_tag", "http_interactive"):
            if mode in res:
                for s in ("p50", "p95", "max"):
                    v[f"{mode}.{s}"] = res[mode][s]
        for m in ("box", "tag", "interactive"):
            if f"http_{m}_overhead" in res:
                v[f"http_overhead.{m}"] = res[f"http_{m}_overhead"]["p50"]
        if "throughput" in res:
            v["throughput.images_per_s"] = res["throughput"]["images_per_s"]
        mem = res.get("memory")
        if mem:
            v["memory.rss_peak"] = mem["rss_peak"]
            for k in ("rss_after_50", "rss_after_soak", "rss_growth", "rss_growth_second_half"):
                if k in mem:
                    v[f"memory.{k}"] = mem[k]
        q = res.get("quality")
        if q:
            v["quality.object_miou"] = q["object"]["mIoU"]
            v["quality.class_miou"] = q["class"]["mIoU"]
        out[cfg] = v
    base = out.get(baseline, {})
    for v in out.values():
        if len(out) > 1 and "box.p50" in v and base.get("box.p50"):
            v["speedup.box"] = base["box.p50"] / v["box.p50"]
    return out


def _check(key: str, value: float | None, base: float | None) -> bool | None:
    if key not in TARGETS or value is None or not math.isfinite(value):
        return None
    op, thr = TARGETS[key]
    if thr == "baseline":
        if base is None:
            return None
        thr = base
    return value <= thr if op == "<=" else value >= thr  # type: ignore[operator]


def target_text(key: str) -> str:
    if key not in TARGETS:
        return ""
    op, thr = TARGETS[key]
    sym = "≤" if op == "<=" else "≥"
    if thr == "baseline":
        return f"{sym} baseline"
    unit = next(m.unit for m in METRICS if m.key == key)
    return f"{sym} {thr:g} {unit}" + (" (flat)" if key == "memory.rss_growth" else "")


def build_rows(values: dict[str, dict[str, float]], configs: list[str], baseline: str) -> list[dict[str, Any]]:
    others = [c for c in configs if c != baseline] or configs
    rows = []
    for m in METRICS:
        vals = {c: values[c].get(m.key) for c in configs}
        if all(v is None for v in vals.values()):
            continue
        ratios: dict[str, float | None] = {}
        if m.ratio:
            b = vals.get(baseline)
            for c in configs:
                if c != baseline:
                    v = vals[c]
                    ratios[c] = v / b if v is not None and b not in (None, 0) else None
        passes = {}
        if m.key in TARGETS:
            for c in others:
                base = vals.get(baseline) if c != baseline else None
                passes[c] = _check(m.key, vals[c], base)  # relative targets: n/a without a baseline
        rows.append(
            {
                "key": m.key,
                "metric": m.label,
                "unit": m.unit,
                "digits": m.digits,
                "values": vals,
                "ratios": ratios,
                "target": target_text(m.key) or None,
                "pass": passes,
            }
        )
    return rows


def _fmt(v: float | None, digits: int) -> str:
    if v is None:
        return "—"
    return f"{v:.{digits}f}"


def markdown(rows: list[dict[str, Any]], configs: list[str], baseline: str) -> str:
    others = [c for c in configs if c != baseline]
    checked = others or configs
    head = ["Metric", "Unit", *configs, *[f"{c}/{baseline}" for c in others], "Target", *[f"pass ({c})" for c in checked]]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for r in rows:
        cells = [r["metric"], r["unit"], *[_fmt(r["values"][c], r["digits"]) for c in configs]]
        cells += [_fmt(r["ratios"].get(c), 3) for c in others]
        cells.append(r["target"] or "")
        for c in checked:
            p = r["pass"].get(c)
            cells.append("" if p is None and not r["target"] else "n/a" if p is None else "PASS" if p else "FAIL")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
