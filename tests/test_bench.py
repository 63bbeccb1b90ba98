"""The benchmark (``python -m bench``): a tiny real run checks the output's structure.

No timing thresholds anywhere: the numbers are only checked to be positive and finite, the
ratios to be the division of the reported values, and mIoU to lie in (0, 100].
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import summarize
from bench.httpbench import parse_server_timing
from bench.report import METRICS, build_rows, flatten, markdown

REPO = Path(__file__).resolve().parents[1]
VOC_ROOT = REPO.parent / "shared" / "voc2012" / "VOC2012"
GUNICORN = Path(sys.executable).with_name("gunicorn")

LATENCY_MODES = ("box", "tag", "interactive", "interactive_cold", "click", "http_box", "http_tag", "http_interactive")
# The HTTP overhead is measured inside each request (client latency - server compute), so it is
# positive like every other figure; only the RSS growth can be negative.
MAY_BE_NEGATIVE = ("memory.rss_growth",)


# ------------------------------------------------------------------------- pure functions
def test_summarize_takes_the_median_of_each_rounds_statistics() -> None:
    s = summarize([[0.010, 0.020, 0.030], [0.040, 0.050, 0.060], [0.001, 0.002, 0.003]])
    assert s["p50"] == pytest.approx(20.0)  # per-round p50s 20, 50, 2 ms
    assert s["max"] == pytest.approx(30.0)
    assert s["n_samples"] == 9 and s["n_rounds"] == 3
    assert s["pooled"]["max"] == pytest.approx(60.0)


def test_parse_server_timing() -> None:
    assert parse_server_timing("predict;dur=12.50, download;dur=0.25") == {"predict": 12.5, "download": 0.25}
    assert parse_server_timing("cache;desc=hit, app;dur=3") == {"app": 3.0}
    assert parse_server_timing("") == {}


def _fake(box_p50: float, miou: float, late_growth: float = 0.5) -> dict:
    lat = {"p50": box_p50, "p95": 2 * box_p50, "max": 3 * box_p50}
    return {
        "box": lat,
        "tag": lat,
        "interactive": lat,
        "interactive_cold": lat,
        "click": lat,
        "http_box": {"p50": box_p50 + 4, "p95": 1.0, "max": 1.0},
        "http_box_overhead": {"p50": 4.0, "p95": 5.0, "max": 6.0},
        "throughput": {"images_per_s": 1000 / box_p50},
        "memory": {
            "rss_peak": 400.0,
            "rss_after_50": 380.0,
            "rss_after_soak": 390.0,
            "rss_growth": 10.0,
            "rss_growth_second_half": late_growth,
        },
        "quality": {"object": {"mIoU": miou}, "class": {"mIoU": 30.0}},
    }


def test_report_ratios_and_targets() -> None:
    values = flatten({"reference": _fake(400.0, 60.0), "default": _fake(40.0, 61.0)}, "reference")
    assert values["default"]["speedup.box"] == pytest.approx(10.0)
    assert values["default"]["http_overhead.box"] == pytest.approx(4.0)
    rows = {r["key"]: r for r in build_rows(values, ["reference", "default"], "reference")}
    assert rows["box.p50"]["ratios"]["default"] == pytest.approx(0.1)
    assert rows["box.p50"]["pass"] == {"default": True}  # 40 <= 50
    assert rows["box.p95"]["pass"] == {"default": True}  # 80 <= 150
    assert rows["speedup.box"]["pass"] == {"default": True}
    assert rows["quality.object_miou"]["pass"] == {"default": True}
    assert rows["interactive.p95"]["pass"] == {"default": True}
    assert rows["memory.rss_growth_second_half"]["pass"] == {"default": True}  # 0.5 MB: flat
    worse = flatten({"reference": _fake(100.0, 60.0), "default": _fake(60.0, 59.0, late_growth=8.0)}, "reference")
    rows = {r["key"]: r for r in build_rows(worse, ["reference", "default"], "reference")}
    assert rows["box.p50"]["pass"] == {"default": False}
    assert rows["speedup.box"]["pass"] == {"default": False}
    assert rows["quality.object_miou"]["pass"] == {"default": False}
    assert rows["memory.rss_growth_second_half"]["pass"] == {"default": False}
    md = markdown(list(rows.values()), ["reference", "default"], "reference")
    assert "FAIL" in md and "default/reference" in md


# ------------------------------------------------------------------------- a real tiny run
def _md_rows(md: str) -> tuple[list[str], list[list[str]]]:
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]
    return head, rows


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, str]:
    if not (VOC_ROOT / "JPEGImages").is_dir():
        pytest.skip(f"no VOC data at {VOC_ROOT}")
    if not GUNICORN.exists() and shutil.which("gunicorn") is None:
        pytest.skip("gunicorn is not installed")
    out = tmp_path_factory.mktemp("bench")
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "--voc",
        str(VOC_ROOT),
        "--configs",
        "reference,default",
        "--images",
        "2",
        "--repeat",
        "1",
        "--warmup",
        "1",
        "--skip-soak",
        "--out",
        str(out),
    ]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads((out / "bench.json").read_text())
    return doc, (out / "bench.md").read_text(), p.stdout


@pytest.mark.slow  # the whole benchmark (bench_run fixture): 126 s
def test_bench_json_has_the_run_description(bench_run: tuple[dict, str, str]) -> None:
    doc, _, _ = bench_run
    assert doc["command"].startswith("python -m bench") and doc["date"]
    assert doc["partial"] is False
    m = doc["machine"]
    assert m["nproc"] >= 1 and m["cpu_model"] and m["torch"] and m["opencv"]
    assert doc["configs"] == ["reference", "default"] and doc["baseline"] == "reference"
    assert doc["n_images"] == 2 and len(doc["images"]) == 2
    for c in doc["configs"]:
        mem = doc["results"][c]["memory"]
        assert mem["worker_pid"] > 0 and mem["rss_peak"] >= mem["rss_end"] > 0


@pytest.mark.slow  # the whole benchmark (bench_run fixture): 126 s
def test_bench_every_config_has_every_metric_positive_and_finite(bench_run: tuple[dict, str, str]) -> None:
    doc, _, _ = bench_run
    expected = {f"{m}.{s}" for m in LATENCY_MODES for s in ("p50", "p95", "max")}
    expected |= {
        "http_overhead.box",
        "http_overhead.tag",
        "http_overhead.interactive",
        "throughput.images_per_s",
        "memory.rss_peak",
        "quality.object_miou",
        "quality.class_miou",
        "speedup.box",
    }
    rows = {r["key"]: r for r in doc["rows"]}
    assert expected <= set(rows)
    for key, r in rows.items():
        for c in doc["configs"]:
            v = r["values"][c]
            assert v is not None and math.isfinite(v), (key, c, v)
            if not key.startswith(MAY_BE_NEGATIVE):
                assert v > 0, (key, c, v)
    for c in doc["configs"]:
        for mode in LATENCY_MODES:
            s = doc["results"][c][mode]
            assert 0 < s["p50"] <= s["max"] and s["p95"] <= s["max"]
        for key in ("quality.object_miou", "quality.class_miou"):
            assert 0 < rows[key]["values"][c] <= 100


@pytest.mark.slow  # the whole benchmark (bench_run fixture): 126 s
def test_bench_ratios_are_the_division_of_the_reported_values(bench_run: tuple[dict, str, str]) -> None:
    doc, md, stdout = bench_run
    timing_keys = [m.key for m in METRICS if m.unit == "ms"]
    rows = {r["key"]: r for r in doc["rows"]}
    for key in timing_keys:
        assert "default" in rows[key]["ratios"], key
    for r in doc["rows"]:
        for c, ratio in r["ratios"].items():
            assert ratio == pytest.approx(r["values"][c] / r["values"]["reference"], rel=1e-12)
    # the Markdown table: one row per metric, a column per config, the ratio of the printed numbers
    assert md.split("\n| Metric")[1] in stdout
    head, table = _md_rows(md)
    i_ref, i_def, i_ratio = head.index("reference"), head.index("default"), head.index("default/reference")
    assert len(table) == len(doc["rows"])
    for r, cells in zip(doc["rows"], table, strict=False):
        assert cells[0] == r["metric"]
        if not r["ratios"]:
            continue
        ref, dflt, ratio = float(cells[i_ref]), float(cells[i_def]), float(cells[i_ratio])
        half = 0.5 * 10 ** -r["digits"]
        tol = half / abs(ref) * (1 + abs(dflt / ref)) + 0.0005 + 1e-9
        assert abs(ratio - dflt / ref) <= tol, (r["key"], cells)
