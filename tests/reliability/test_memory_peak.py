"""Issue 11 item 2: a worker's peak memory under the largest request the default limits allow,
CAMCUT_MAX_PIXELS (40 MP) x CAMCUT_MAX_BOXES (100 boxes over all 20 VOC classes), on a real
gunicorn server (the benchmark's Server), read from the worker's /proc VmHWM. The README states
the bound asserted here and the figure measured."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from backend.config import Settings
from bench.common import BenchImage
from bench.httpbench import LABEL_CONFIG, Server, StaticImages, _rect
from model import VOC_CLASSES, Box

VOC = Path(__file__).resolve().parents[3] / "shared" / "voc2012" / "VOC2012"
STEM = "2007_000063"
PEAK_BOUND_MB = 1200.0  # stated in README "Reliability and security", Memory per request (measured 1028 MB)
TAGS_PEAK_BOUND_MB = 1500.0  # the same README item, 20 tags (measured 1364 / 1395 MB; 11262 MB before the bound)


def big_image(pixels: int) -> BenchImage:
    """A real VOC photo upscaled to just under ``pixels`` (JPEG: a few MB, under the download limit)."""
    with Image.open(VOC / "JPEGImages" / f"{STEM}.jpg") as im:
        scale = (pixels / (im.width * im.height)) ** 0.5
        w, h = int(im.width * scale), int(im.height * scale)
        buf = io.BytesIO()
        im.convert("RGB").resize((w, h), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=80)
    assert w * h <= pixels
    return BenchImage("big", buf.getvalue(), w, h, (), ())


def predict_on_a_server(im: BenchImage, body: dict[str, Any], tmp_path: Path) -> tuple[dict[str, Any], float, float]:
    """One /predict of ``body`` (its image served by a static Label Studio) on a real gunicorn
    server: the task's answer, and the worker's VmHWM (MB) after start-up and after the request."""
    ls = StaticImages([im])
    try:
        with Server("default", ls.url, tmp_path / "gunicorn.log", extra_env={"TIMEOUT": "0"}) as srv:
            before = srv.memory()["VmHWM"]
            r = requests.post(srv.url + "/predict", json=body, timeout=3000)
            assert r.status_code == 200, r.text[:300]
            [pred] = r.json()["results"]
            peak = srv.memory()["VmHWM"]
    finally:
        ls.close()
    return pred, before, peak


@pytest.mark.slow
def test_worker_peak_rss_under_the_largest_allowed_request(tmp_path: Path) -> None:
    s = Settings.from_env({})
    im = big_image(s.max_pixels)
    rng = np.random.default_rng(0)
    boxes = []
    for k in range(s.max_boxes):  # every class, boxes of 10..60 % of each side
        bw, bh = rng.uniform(0.1, 0.6) * im.width, rng.uniform(0.1, 0.6) * im.height
        x0, y0 = rng.uniform(0, im.width - bw), rng.uniform(0, im.height - bh)
        boxes.append(_rect(VOC_CLASSES[k % 20], Box(x0, y0, x0 + bw, y0 + bh), im.width, im.height, f"r{k}"))
    task = {"id": 1, "data": {"image": "/data/upload/bench/big.jpg"}, "annotations": [], "predictions": [{"result": boxes}]}
    body = {"project": "1.1", "label_config": LABEL_CONFIG, "tasks": [task]}
    pred, before, peak = predict_on_a_server(im, body, tmp_path)
    print(
        f"\n{im.width}x{im.height} ({im.width * im.height / 1e6:.1f} MP), {len(boxes)} boxes: "
        f"{len(pred['result'])} masks, worker VmHWM {before:.0f} MB after start -> {peak:.0f} MB"
    )
    assert len(pred["result"]) + len(pred.get("warnings") or []) >= len(boxes), pred.get("error")
    assert peak < PEAK_BOUND_MB, f"worker peak RSS {peak:.0f} MB"


@pytest.mark.slow
def test_worker_peak_rss_under_every_tag_on_the_largest_image(tmp_path: Path) -> None:
    """Issue 11: 20 tags on a 40 MP image took a worker past 4.9 GB (a full-size float CAM per
    tag, all held while the tags compete for pixels). Tags are cut at CAMCUT_TAG_WORK_PIXELS."""
    s = Settings.from_env({})
    im = big_image(s.max_pixels)
    task = {"id": 1, "data": {"image": "/data/upload/bench/big.jpg", "tags": list(VOC_CLASSES)}, "annotations": []}
    body = {"project": "1.1", "label_config": LABEL_CONFIG, "tasks": [task]}
    pred, before, peak = predict_on_a_server(im, body, tmp_path)
    masks = pred.get("result") or []
    print(
        f"\n{im.width}x{im.height} ({im.width * im.height / 1e6:.1f} MP), {len(VOC_CLASSES)} tags: "
        f"{len(masks)} masks, {len(pred.get('empty') or [])} empty, worker VmHWM {before:.0f} MB after start -> {peak:.0f} MB"
    )
    assert "error" not in pred, pred.get("error")
    assert len(masks) + len(pred.get("empty") or []) == len(VOC_CLASSES)
    assert all(m["original_width"] == im.width and m["original_height"] == im.height for m in masks)
    assert peak < TAGS_PEAK_BOUND_MB, f"worker peak RSS {peak:.0f} MB"
