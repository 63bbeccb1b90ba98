"""``python -m bench --voc ../shared/voc2012/VOC2012 --configs reference,default [--images N] [--repeat R]``

Measures, for each engine configuration side by side, in one run:

1. in-process latency (bench/inproc.py): box mode, tag mode, interactive box (image set) and
   interactive cold, decode and RLE included, torch threads as a worker sets them (CAMCUT_TORCH_THREADS, 1);
2. HTTP ``/predict`` latency on the real gunicorn server and the HTTP overhead (bench/httpbench.py);
3. throughput with one single-threaded process per core (bench/throughput.py);
4. the server worker's peak RSS and its growth over a soak of ``--soak`` requests;
5. object / class mIoU of the configuration's own techniques (bench/quality.py);
6. ratios against the baseline (``reference`` when listed, else the first) and pass/fail of
   the other configurations against the targets (bench/report.py).

Latency figures are p50 / p95 / max in ms over all images (x boxes for the interactive box)
of one round, after a warm-up; the table shows the median of each over ``--repeat`` rounds.
The table goes to stdout, ``<out>/bench.md`` and ``<out>/bench.json`` (with every round).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from evaluator.dataset import DatasetError

from .common import cores, load_images, machine_info


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--voc", default=os.environ.get("CAMCUT_VOC", "../shared/voc2012/VOC2012"), help="VOC2012 folder")
    ap.add_argument(
        "--configs", default="reference,default,featcut", help="comma list of engine configurations (model.config.CONFIGS)"
    )
    ap.add_argument("--images", type=int, default=None, help="first N images of the split (default: all)")
    ap.add_argument(
        "--split",
        default="train",
        help="ImageSets/Segmentation/<split>.txt of the VOC folder: train, val or a list of your own (default train)",
    )
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds over the images (medians are reported)")
    ap.add_argument("--warmup", type=int, default=2, help="images run untimed per mode before timing")
    ap.add_argument("--soak", type=int, default=1000, help="/predict requests per server for the memory soak (>= 50)")
    ap.add_argument("--soak-configs", default=None, help="comma list: soak only these configurations (default: all)")
    ap.add_argument("--skip-http", action="store_true", help="no server: skip HTTP latency and memory")
    ap.add_argument("--skip-soak", action="store_true", help="no soak (peak RSS is still read after the HTTP requests)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--processes", type=int, default=None, help="throughput processes (default: one per core)")
    ap.add_argument("--cnn-cache", default=None, help="CNN cache folder for the quality sweep (default: none)")
    ap.add_argument("--out", default="runs/bench", help="output folder (bench.md, bench.json, server logs)")
    a = ap.parse_args(argv)
    if a.images is not None and a.images < 1:
        ap.error("--images must be >= 1")
    if a.repeat < 1:
        ap.error("--repeat must be >= 1")
    if not a.skip_soak and a.soak < 50:
        ap.error("--soak must be >= 50 (RSS is compared with the one after request 50); use --skip-soak")
    return a


def main(argv: list[str] | None = None) -> int:
    if (sys.argv[1:] if argv is None else argv)[:1] == ["bulk"]:  # camcut bulk, local vs Dask (bench/clusterbench.py)
        from .clusterbench import main as bulk_main

        return bulk_main((sys.argv[1:] if argv is None else argv)[1:])
    a = parse_args(argv)
    from model.config import get_config

    from .report import build_rows, flatten, markdown

    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    try:
        details = {c: get_config(c) for c in configs}
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if len(set(configs)) != len(configs):
        print("error: a configuration is listed twice", file=sys.stderr)
        return 2
    soak_configs = set(configs if a.soak_configs is None else [c.strip() for c in a.soak_configs.split(",") if c.strip()])
    baseline = "reference" if "reference" in configs else configs[0]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    t_start = time.perf_counter()
    try:
        images = load_images(a.voc, a.images, a.split)
    except DatasetError as exc:  # names the missing list, mask or XML
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not images:
        print("error: no images", file=sys.stderr)
        return 2
    cmd = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    doc: dict[str, Any] = {
        "command": cmd,
        "date": started.isoformat(timespec="seconds"),
        "machine": machine_info(),
        "configs": configs,
        "baseline": baseline,
        "config_details": {
            c: {"version_key": k.version_key, "box_technique": k.box_technique.label, "class_technique": k.class_technique.label}
            for c, k in details.items()
        },
        "images": [im.image_id for im in images],
        "n_images": len(images),
        "n_boxes": sum(len(im.objects) for im in images),
        "repeat": a.repeat,
        "warmup": a.warmup,
        "soak": 0 if a.skip_http or a.skip_soak else a.soak,
        "sections_seconds": {},
        "results": {c: {} for c in configs},
    }
    res = doc["results"]

    def save(partial: bool) -> None:
        doc["partial"] = partial
        doc.setdefault("loadavg_log", []).append(
            {"t_s": round(time.perf_counter() - t_start, 1), "loadavg": list(os.getloadavg())}
        )
        (out / "bench.json").write_text(json.dumps(doc, indent=1))

    _log(f"bench: {len(images)} images, {doc['n_boxes']} boxes, configs {configs}, {cores()} cores, {a.repeat} round(s)")

    # 1. in-process latency (first, while nothing else of ours runs)
    from .inproc import run_inprocess

    t0 = time.perf_counter()
    _log("[1/5] in-process latency")
    for c, modes in run_inprocess(list(details.values()), images, a.repeat, a.warmup, _log).items():
        res[c].update(modes)
    doc["sections_seconds"]["inprocess"] = time.perf_counter() - t0
    save(True)

    # 3. throughput
    if not a.skip_throughput:
        from .throughput import run_throughput

        t0 = time.perf_counter()
        _log("[2/5] throughput")
        for c in configs:
            res[c]["throughput"] = run_throughput(details[c], images, a.repeat, a.processes, _log)
        doc["sections_seconds"]["throughput"] = time.perf_counter() - t0
        save(True)

    # 2 + 4. HTTP and memory
    if not a.skip_http:
        from .httpbench import StaticImages, run_http

        t0 = time.perf_counter()
        _log("[3/5] HTTP /predict and server memory")
        ls = StaticImages(images)
        try:
            for c in configs:
                soak = 0 if a.skip_soak or c not in soak_configs else a.soak
                res[c].update(run_http(c, images, a.repeat, ls, out / f"server-{c}.log", soak, a.warmup, _log))
                n_fail, n_empty = len(res[c]["failures"]), len(res[c]["empty_masks"])
                _log(f"  {c}: {n_fail} failed request(s), {n_empty} empty tag mask(s), listed in the JSON")
                save(True)
        finally:
            ls.close()
        doc["sections_seconds"]["http"] = time.perf_counter() - t0

    # 5. quality
    if not a.skip_quality:
        from .quality import run_quality

        t0 = time.perf_counter()
        _log("[4/5] quality")
        for c in configs:
            res[c]["quality"] = run_quality(a.voc, details[c], len(images), cache=a.cnn_cache)
            _log(
                f"  {c}: object mIoU {res[c]['quality']['object']['mIoU']:.2f}, "
                f"class mIoU {res[c]['quality']['class']['mIoU']:.2f}"
            )
        doc["sections_seconds"]["quality"] = time.perf_counter() - t0

    # 6. table
    _log("[5/5] report")
    values = flatten(res, baseline)
    rows = build_rows(values, configs, baseline)
    doc["values"] = values
    doc["rows"] = rows
    doc["seconds"] = time.perf_counter() - t_start
    doc["machine"]["loadavg_at_end"] = list(os.getloadavg())
    save(False)
    m = doc["machine"]
    busy = m["loadavg_at_start"][0] > 0.5 * m["nproc"]
    loads = ", ".join(f"{e['loadavg'][0]:.1f}" for e in doc["loadavg_log"])
    header = (
        f"# camcut benchmark\n\nCommand: `{cmd}`  \nDate: {doc['date']}  \n"
        f"Machine: {m['nproc']} cores ({m['cpu_model']}), {m['mem_total_mb']} MB RAM; "
        f"Python {m['python']}, torch {m['torch']}, OpenCV {m['opencv']}  \n"
        f"Images: first {len(images)} of VOC2012 train ({doc['n_boxes']} boxes); {a.repeat} round(s), "
        f"warm-up {a.warmup}; soak {doc['soak']} requests; baseline `{baseline}`; wall time {doc['seconds']:.0f} s  \n"
        f"1-min load average at start {m['loadavg_at_start'][0]:.2f}, after each section {loads} "
        f"(the run itself keeps up to {m['nproc']} cores busy)\n\n"
        + (
            f"**Warning: the machine was already busy when the run started (load {m['loadavg_at_start'][0]:.2f} on "
            f"{m['nproc']} cores): timings are not representative.**\n\n"
            if busy
            else ""
        )
        + "".join(
            f"- `{c}`: box {d['box_technique']}, class {d['class_technique']}; `{d['version_key']}`\n"
            for c, d in doc["config_details"].items()
        )
        + "\nLatencies: median over rounds of each round's p50 / p95 / max. Ratios: config / baseline.\n\n"
    )
    table = markdown(rows, configs, baseline)
    (out / "bench.md").write_text(header + table)
    print(header + table)
    _log(f"wrote {out}/bench.md and {out}/bench.json in {doc['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
