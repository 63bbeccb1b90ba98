"""The interaction function through the real cvat-cli 2.80.0: `function create-native`, then
`function run-agent --burst` against the loopback fake CVAT's function-queue endpoints (the
agent acquires annotation requests, fetches frames, posts results / failures).

Bad requests (a box outside the frame, no prompt, a frame that is not an image) must fail
that one request with a message and leave the agent serving the next one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cvat_sdk.masks import decode_mask

from cvat.images import from_pil
from model.segmenter import mask_iou

from .conftest import gt_union, jpeg, pil_rgb, run_cli, voc_boxes
from .fake_cvat import FakeCvat, FakeTask

pytestmark = pytest.mark.slow  # each test runs a subprocess on real VOC images (> 15 s on 2 cores)

STEM = "2007_000738"  # one aeroplane
IOU_FLOOR = 0.5


def _ar(ar_id: str, frame: int, pos=(), neg=(), bbox=()) -> dict:  # type: ignore[no-untyped-def]
    return {
        "ar_id": ar_id,
        "ar_params": {
            "type": "interact",
            "task": 7,
            "frame": frame,
            "pos_points": [list(p) for p in pos],
            "neg_points": [list(p) for p in neg],
            "obj_bbox": [list(p) for p in bbox],
        },
    }


def test_create_native_then_agent_serves_box_and_clicks(tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    data = jpeg(STEM).read_bytes()
    frames = [(f"{STEM}.jpg", data), ("broken.jpg", b"this is not an image")]
    ((_, (x0, y0, x1, y1)),) = voc_boxes(STEM)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    with FakeCvat([FakeTask(id=7, labels=[{"id": 1, "name": "airplane"}], frames=frames)]) as fake:
        r = run_cli(fake.port, ["function", "create-native", "camcut", "--function-module", "cvat.interactor"], tmp_path)
        assert r.returncode == 0, r.stderr
        fid = int(r.stdout.strip())
        fn = fake.functions[fid]
        # what the UI reads to offer the tool: an interactor, box optional, clicks optional
        assert (fn["kind"], fn["provider"], fn["min_pos_points"], fn["min_neg_points"], fn["startswith_box_optional"]) == (
            "interactor",
            "native",
            0,
            0,
            True,
        )
        fake.ars = [
            _ar("box", 0, bbox=((x0, y0), (x1, y1))),
            _ar("outside", 0, bbox=((5000, 5000), (5100, 5100))),
            _ar("clicks", 0, pos=[(cx, cy)], neg=[(2, 2)]),
            _ar("nothing", 0, neg=[(2, 2)]),
            _ar("not-an-image", 1, bbox=((0, 0), (10, 10))),
            _ar("box-again", 0, bbox=((x0, y0), (x1, y1))),
        ]
        r = run_cli(fake.port, ["function", "run-agent", str(fid), "--function-module", "cvat.interactor", "--burst"], tmp_path)
        assert r.returncode == 0, r.stderr
    assert sorted(fake.completed) == ["box", "box-again", "clicks"], (fake.completed.keys(), fake.failed)
    assert sorted(fake.failed) == ["not-an-image", "nothing", "outside"]
    assert "camcut cannot use this prompt" in fake.failed["outside"] and "no area inside" in fake.failed["outside"]
    assert "no positive point" in fake.failed["nothing"]
    im = pil_rgb(data)
    w, h = im.size
    masks = {}
    for ar_id, body in fake.completed.items():
        (shape,) = body["shapes"]
        assert shape["type"] == "mask"
        masks[ar_id] = decode_mask(shape["points"], image_width=w, image_height=h)
    seg = engine.set_image(from_pil(im))
    assert seg is engine.segmenter
    own_box = engine.interact([], [], (x0, y0, x1, y1))
    assert np.array_equal(masks["box"], own_box) and np.array_equal(masks["box-again"], own_box)
    assert mask_iou(masks["box"], gt_union(STEM)) >= IOU_FLOOR
    assert masks["clicks"][int(cy), int(cx)] and not masks["clicks"][2, 2]
    assert np.array_equal(masks["clicks"], engine.interact([(cx, cy)], [(2, 2)], None))


def test_detector_as_native_function(tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    """The detector registered with create-native and served by run-agent: the UI's per-frame
    request ("annotate_frame"); a non-image frame fails that request only. (The whole-task
    "annotate_task" request goes through the same function; it is not replayed here.)"""
    data = jpeg(STEM).read_bytes()
    frames = [(f"{STEM}.jpg", data), ("broken.jpg", b"this is not an image")]
    labels = [{"id": 1, "name": "airplane"}, {"id": 2, "name": "widget"}]
    fn_args = ["--function-module", "cvat.detector", "-p", "labels=str:airplane"]
    with FakeCvat([FakeTask(id=7, labels=labels, frames=frames, chunk_size=2)]) as fake:
        r = run_cli(fake.port, ["function", "create-native", "camcut-detector", *fn_args], tmp_path)
        assert r.returncode == 0, r.stderr
        fid = int(r.stdout.strip())
        assert fake.functions[fid]["kind"] == "detector"
        assert [lab["name"] for lab in fake.functions[fid]["labels_v2"]] == ["airplane"]
        params = {"task": 7, "mapping": {"airplane": {"name": "airplane"}}, "threshold": None, "conv_mask_to_poly": False}
        fake.ars = [
            {"ar_id": "frame0", "ar_params": {"type": "annotate_frame", "frame": 0, **params}},
            {"ar_id": "broken", "ar_params": {"type": "annotate_frame", "frame": 1, **params}},
        ]
        r = run_cli(fake.port, ["function", "run-agent", str(fid), *fn_args, "--burst"], tmp_path)
        assert r.returncode == 0, r.stderr
    assert sorted(fake.completed) == ["frame0"] and sorted(fake.failed) == ["broken"], (fake.completed, fake.failed)
    (shape,) = fake.completed["frame0"]["annotations"]["shapes"]
    im = pil_rgb(data)
    got = decode_mask(shape["points"], image_width=im.width, image_height=im.height)
    (own,) = engine.detect(from_pil(im), {"airplane": "aeroplane"})
    assert shape["type"] == "mask" and shape["label_id"] == 1 and np.array_equal(got, own.mask)
    assert mask_iou(got, gt_union(STEM)) >= IOU_FLOOR
