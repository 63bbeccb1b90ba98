"""The nuclio handlers (cvat/nuclio/*/main.py) called through nuclio-sdk's test platform
(nuclio_sdk.test.Platform, which also runs init_context) with real VOC images.

No nuclio or CVAT runs here (both ship as Docker images), so the two steps CVAT takes with a
function's output are replayed from its sources:
* cvat/apps/lambda_manager/views.py, LambdaFunction.__init__: reads metadata.annotations
  (type, json spec with unique label names, min_pos_points, min_neg_points, startswith_box_optional,
  version) - replayed on our function.yaml files;
* same file, LambdaJob._call_detector: for a "mask" it takes anno["mask"], splits the last four
  numbers (xtl, ytl, xbr, ybr), RLE-encodes the rest with datumaro's mask_tools.mask_to_rle
  (run lengths, starting with a run of zeros) and stores RLE + box as the shape's points - the
  format cvat_sdk.masks.decode_mask reads; with conv_mask_to_poly it takes anno["points"].
* interactor: cvat-core/src/lambda-manager.ts InteractorResults {mask: number[][], bounds?}:
  rows of the frame, non-zero = object.
"""

from __future__ import annotations

import base64
import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from cvat_sdk.masks import decode_mask
from nuclio_sdk import Event
from nuclio_sdk.test import Platform

from cvat.images import from_base64
from model.segmenter import mask_iou

from .conftest import DETECT_STEMS, gt_union, jpeg, voc_boxes

ROOT = Path(__file__).resolve().parents[2]
IOU_FLOOR = 0.5


def _server_reads_function(path: Path) -> dict:
    """LambdaFunction.__init__'s reading of metadata.annotations (views.py), replayed."""
    data = yaml.safe_load(path.read_text())
    meta = data["metadata"]["annotations"]
    spec = json.loads(meta.get("spec") or "[]")
    labels = [item["name"] for item in spec]
    assert len(labels) == len(set(labels)), "CVAT refuses non-unique labels"
    return {
        "kind": meta.get("type"),
        "labels": labels,
        "version": int(meta.get("version", "1")),
        "min_pos_points": int(meta.get("min_pos_points", 1)),
        "min_neg_points": int(meta.get("min_neg_points", -1)),
        "startswith_box": bool(meta.get("startswith_box", False)),
        "startswith_box_optional": bool(meta.get("startswith_box_optional", False)),
        "handler": data["spec"]["handler"],
    }


def _server_mask_points(anno_mask: list[int]) -> list[int]:
    """views.py: rle = mask_tools.mask_to_rle(np.array(cut_points))["counts"]; rle += box.
    datumaro's mask_to_rle: run lengths of the (1-D here) array, the first run counting zeros."""
    xtl, ytl, xbr, ybr = anno_mask[-4:]
    flat = np.asarray(anno_mask[:-4])
    assert set(np.unique(flat)) <= {0, 1}
    change = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], change, [flat.size]])).tolist()
    if flat[0] != 0:
        runs = [0, *runs]
    return runs + [xtl, ytl, xbr, ybr]


def _handler(kind: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"cvat.nuclio.{kind}.main").handler


def _event(body: dict) -> Event:
    return Event(body=json.dumps(body).encode(), content_type="application/json", method="POST")


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def platform() -> Platform:
    return Platform()


def test_function_yaml_as_cvat_reads_it() -> None:
    det = _server_reads_function(ROOT / "cvat/nuclio/detector/function.yaml")
    assert det["kind"] == "detector" and "aeroplane" in det["labels"] and len(det["labels"]) == 20
    inter = _server_reads_function(ROOT / "cvat/nuclio/interactor/function.yaml")
    assert (
        inter["kind"],
        inter["version"],
        inter["min_pos_points"],
        inter["min_neg_points"],
        inter["startswith_box_optional"],
    ) == ("interactor", 2, 0, 0, True)
    assert det["handler"] == inter["handler"] == "main:handler"


@pytest.mark.slow
def test_detector_masks_decode_as_cvat_stores_them(platform: Platform, engine) -> None:  # type: ignore[no-untyped-def]
    handler = _handler("detector")
    for stem, (_label, voc) in DETECT_STEMS.items():
        resp = platform.call_handler(handler, _event({"image": _b64(jpeg(stem)), "threshold": 0.2}))
        assert resp.status_code == 200, resp.body
        annos = json.loads(resp.body)
        mine = [a for a in annos if a["label"] == voc]
        assert len(mine) == 1, annos
        a = mine[0]
        assert a["type"] == "mask" and 0.2 <= float(a["confidence"]) <= 1
        rgb = from_base64(_b64(jpeg(stem)))
        h, w = rgb.shape[:2]
        stored = decode_mask(_server_mask_points(a["mask"]), image_width=w, image_height=h)
        own = {d.voc_class: d.mask for d in engine.detect(rgb, {voc: voc})}
        assert np.array_equal(stored, own[voc])
        assert mask_iou(stored, gt_union(stem)) >= IOU_FLOOR, stem
        assert len(a["points"]) >= 6  # the polygon CVAT takes with "convert masks to polygons"


@pytest.mark.slow
def test_interactor_box_and_clicks(platform: Platform, engine) -> None:  # type: ignore[no-untyped-def]
    handler = _handler("interactor")
    stem = "2007_000738"
    ((_, (x0, y0, x1, y1)),) = voc_boxes(stem)
    rgb = from_base64(_b64(jpeg(stem)))
    h, w = rgb.shape[:2]
    for bbox in ([x0, y0, x1, y1], [[x0, y0], [x1, y1]]):  # current and older CVAT servers
        resp = platform.call_handler(
            handler, _event({"image": _b64(jpeg(stem)), "pos_points": [], "neg_points": [], "obj_bbox": bbox})
        )
        assert resp.status_code == 200, resp.body
        rows = np.asarray(json.loads(resp.body)["mask"])
        assert rows.shape == (h, w)
        got = rows != 0
        engine.set_image(rgb)
        assert np.array_equal(got, engine.interact([], [], (x0, y0, x1, y1)))
        assert mask_iou(got, gt_union(stem)) >= IOU_FLOOR
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    resp = platform.call_handler(
        handler, _event({"image": _b64(jpeg(stem)), "pos_points": [[cx, cy]], "neg_points": [[2, 2]], "obj_bbox": None})
    )
    got = np.asarray(json.loads(resp.body)["mask"]) != 0
    assert got[int(cy), int(cx)] and not got[2, 2]


@pytest.mark.parametrize(
    ("kind", "body", "message"),
    [
        ("detector", {"image": base64.b64encode(b"not an image").decode()}, "image"),
        ("detector", {"image": 12}, "base64"),
        ("detector", {"image": "", "threshold": 7}, "threshold"),
        (
            "interactor",
            {"image": "IMAGE", "pos_points": [], "neg_points": [], "obj_bbox": [5000, 5000, 5100, 5100]},
            "no area inside",
        ),
        ("interactor", {"image": "IMAGE", "pos_points": [], "neg_points": [[1, 1]], "obj_bbox": None}, "no positive point"),
        ("interactor", {"image": "IMAGE", "pos_points": [[1, 2, 3]], "neg_points": []}, "pos_points"),
        ("interactor", {"image": base64.b64encode(b"GIF89a broken").decode(), "pos_points": [[1, 1]], "neg_points": []}, "image"),
    ],
)
def test_bad_input_is_a_400_with_a_message(platform: Platform, kind: str, body: dict, message: str) -> None:
    if body.get("image") == "IMAGE":
        body = {**body, "image": _b64(jpeg("2007_000738"))}
    resp = platform.call_handler(_handler(kind), _event(body))
    assert resp.status_code == 400
    assert message in json.loads(resp.body)["error"]
    # the worker keeps serving: a good request right after still works
    if kind == "interactor":
        ok = platform.call_handler(
            _handler(kind),
            _event({"image": _b64(jpeg("2007_000738")), "pos_points": [], "neg_points": [], "obj_bbox": [10, 10, 200, 200]}),
        )
        assert ok.status_code == 200
