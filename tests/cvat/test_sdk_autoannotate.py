"""`cvat-cli task auto-annotate --function-module cvat.detector` (the real cvat-cli 2.80.0)
against a loopback fake CVAT (no real CVAT can run here: see fake_cvat.py), on real VOC images.

What the CLI uploads is decoded with cvat_sdk.masks.decode_mask, the SDK's own inverse of
the encoder, and compared with the engine's own masks (equal) and VOC ground truth (IoU floor).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cvat_sdk.masks import decode_mask

from cvat.images import from_pil
from model.segmenter import mask_iou

from .conftest import DETECT_STEMS, gt_union, pil_rgb, run_cli
from .fake_cvat import FakeCvat, FakeTask

pytestmark = pytest.mark.slow  # each test runs a subprocess on real VOC images (> 15 s on 2 cores)

LABELS = [
    {"id": 11, "name": "airplane", "type": "any"},
    {"id": 12, "name": "Boat", "type": "any"},
    {"id": 13, "name": "motorcycle", "type": "any"},
    {"id": 14, "name": "widget", "type": "any"},
]
IOU_FLOOR = 0.5  # probed: 0.82 / 0.67 / 0.70 for these three images (cvat.engine.Engine.detect, featcut)


def _task(frames: list[tuple[str, bytes]]) -> FakeTask:
    return FakeTask(id=7, labels=LABELS, frames=frames, chunk_size=2)  # 3 frames -> 2 chunks


def test_auto_annotate_masks_equal_engine_and_match_voc(tmp_path: Path, voc_frames, engine) -> None:  # type: ignore[no-untyped-def]
    with FakeCvat([_task(voc_frames)]) as fake:
        r = run_cli(
            fake.port,
            [
                "task",
                "auto-annotate",
                "7",
                "--function-module",
                "cvat.detector",
                "-p",
                "labels=str:airplane,Boat,motorcycle",
                "--allow-unmatched-labels",
            ],
            tmp_path,
        )
        assert r.returncode == 0, r.stderr
        t = fake.tasks[7]
    assert [p["action"] for p in t.patches] == ["create"]
    shapes = t.patches[0]["body"]["shapes"]
    by_frame = {s["frame"]: s for s in shapes}
    assert sorted(by_frame) == [0, 1, 2] and len(shapes) == 3, shapes
    ids = {lab["name"]: lab["id"] for lab in LABELS}
    for frame, (stem, (label, voc)) in enumerate(DETECT_STEMS.items()):
        s = by_frame[frame]
        assert s["type"] == "mask" and s["label_id"] == ids[label] and s["source"] == "auto"
        im = pil_rgb(voc_frames[frame][1])
        got = decode_mask(s["points"], image_width=im.width, image_height=im.height)
        own = engine.detect(from_pil(im), {label: voc})
        assert len(own) == 1 and np.array_equal(got, own[0].mask)
        assert mask_iou(got, gt_union(stem)) >= IOU_FLOOR, stem


def test_auto_annotate_polygons_on_request(tmp_path: Path, voc_frames) -> None:  # type: ignore[no-untyped-def]
    with FakeCvat([_task(voc_frames[:1])]) as fake:
        r = run_cli(
            fake.port,
            [
                "task",
                "auto-annotate",
                "7",
                "--function-module",
                "cvat.detector",
                "-p",
                "labels=str:airplane",
                "--allow-unmatched-labels",
                "--conv-mask-to-poly",
            ],
            tmp_path,
        )
        assert r.returncode == 0, r.stderr
        shapes = fake.tasks[7].patches[0]["body"]["shapes"]
    assert shapes and all(s["type"] == "polygon" and len(s["points"]) >= 6 for s in shapes)
    # The largest polygon, filled, covers most of the VOC object (polygons drop holes).
    import cv2

    im = pil_rgb(voc_frames[0][1])
    filled = np.zeros((im.height, im.width), np.uint8)
    pts = np.array(shapes[0]["points"], np.float64).reshape(-1, 2).round().astype(np.int32)
    cv2.fillPoly(filled, [pts], 1)
    assert mask_iou(filled.astype(bool), gt_union("2007_000738")) >= IOU_FLOOR


def test_unknown_label_is_refused_by_name(tmp_path: Path, voc_frames) -> None:  # type: ignore[no-untyped-def]
    with FakeCvat([_task(voc_frames[:1])]) as fake:
        r = run_cli(
            fake.port,
            ["task", "auto-annotate", "7", "--function-module", "cvat.detector", "-p", "labels=str:airplane,widget"],
            tmp_path,
        )
        assert fake.tasks[7].patches == []  # nothing uploaded
    assert r.returncode != 0
    assert "widget" in r.stderr and "no camcut class" in r.stderr
