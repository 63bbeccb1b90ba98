"""`python -m cvat.tags` (tags -> masks, optionally boxes -> masks) as a subprocess against the
loopback fake CVAT (fake_cvat.py: no real CVAT can run here), on real VOC images.

Uploaded masks are decoded with cvat_sdk.masks.decode_mask and compared with the engine's own
masks (equal) and VOC ground truth (IoU floor); the state file makes a rerun skip done frames.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cvat_sdk.masks import decode_mask

from cvat.images import from_pil
from model import Box
from model.segmenter import mask_iou

from .conftest import DETECT_STEMS, ROOT, gt_union, jpeg, pil_rgb, voc_boxes
from .fake_cvat import FakeCvat, FakeTask

pytestmark = pytest.mark.slow  # each test runs a subprocess on real VOC images (> 15 s on 2 cores)

IOU_FLOOR = 0.5
# "motorcycle" is a tag-only label: its mask goes to the mask label "motorbike" (same engine class).
LABELS = [
    {"id": 11, "name": "airplane", "type": "any"},
    {"id": 12, "name": "Boat", "type": "any"},
    {"id": 13, "name": "motorcycle", "type": "tag"},
    {"id": 15, "name": "motorbike", "type": "mask"},
    {"id": 14, "name": "widget", "type": "any"},
]
STEMS = list(DETECT_STEMS)


def _tag(i: int, frame: int, label_id: int) -> dict:
    return {"id": i, "frame": frame, "label_id": label_id, "group": 0, "source": "manual", "attributes": []}


def _rect(i: int, frame: int, label_id: int, box: tuple[float, ...]) -> dict:
    return {
        "id": i,
        "frame": frame,
        "label_id": label_id,
        "type": "rectangle",
        "points": list(box),
        "occluded": False,
        "outside": False,
        "z_order": 0,
        "rotation": 0.0,
        "group": 0,
        "source": "manual",
        "attributes": [],
        "elements": [],
    }


def _task() -> FakeTask:
    frames = [(f"{s}.jpg", jpeg(s).read_bytes()) for s in STEMS] + [("broken.jpg", b"not an image at all")]
    t = FakeTask(id=7, labels=LABELS, frames=frames, job_id=70)
    t.annotations["tags"] = [_tag(1, 0, 11), _tag(2, 0, 14), _tag(3, 1, 12), _tag(4, 2, 13), _tag(5, 3, 11)]
    ((_, box),) = voc_boxes(STEMS[0])
    t.annotations["shapes"] = [_rect(6, 0, 11, box)]
    return t


def _run(port: int, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CVAT_ACCESS_TOKEN": "fake-pat", "HOME": str(tmp), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "cvat.tags", "--server-host", "http://127.0.0.1", "--server-port", str(port), *args]
    return subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=300)


def _uploaded(t: FakeTask) -> list[dict]:
    return [s for p in t.patches for s in p["body"]["shapes"]]


def test_tags_to_masks_resumable(tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "state.jsonl"
    # an earlier, interrupted run finished frame 1
    state.write_text(json.dumps({"target": "task:7", "frame": 1, "status": "done"}) + "\n")
    with FakeCvat([_task()]) as fake:
        r = _run(fake.port, tmp_path, "--task", "7", "--state", str(state))
        assert r.returncode == 0, r.stderr
        t = fake.tasks[7]
        shapes = _uploaded(t)
        assert all(p["action"] == "create" for p in t.patches)
        assert sorted((s["frame"], s["label_id"]) for s in shapes) == [(0, 11), (2, 15)]  # not frame 1: done before
        summary = json.loads(r.stdout.strip().splitlines()[-1])
        assert any("widget" in w and "no camcut class" in w for w in summary["warnings"])
        assert any("frame 3 skipped" in w for w in summary["warnings"])  # not an image: that frame only
        for s in shapes:
            stem = STEMS[s["frame"]]
            im = pil_rgb(jpeg(stem).read_bytes())
            got = decode_mask(s["points"], image_width=im.width, image_height=im.height)
            seg = engine.set_image(from_pil(im))
            assert np.array_equal(got, seg.segment_class(DETECT_STEMS[stem][1]).mask)
            assert mask_iou(got, gt_union(stem)) >= IOU_FLOOR, stem
        recs = [json.loads(x) for x in state.read_text().splitlines()]
        assert {(x["frame"], x["status"]) for x in recs} == {(0, "done"), (1, "done"), (2, "done"), (3, "failed")}
        # rerun: only the failed frame is tried again, nothing new is uploaded
        n = len(t.patches)
        r = _run(fake.port, tmp_path, "--task", "7", "--state", str(state))
        assert r.returncode == 0, r.stderr
        assert len(t.patches) == n


def test_boxes_too(tmp_path: Path, engine) -> None:  # type: ignore[no-untyped-def]
    with FakeCvat([_task()]) as fake:
        r = _run(fake.port, tmp_path, "--task", "7", "--boxes")
        assert r.returncode == 0, r.stderr
        frame0 = [s for s in _uploaded(fake.tasks[7]) if s["frame"] == 0]
    assert len(frame0) == 2  # the tag's mask and the box's mask
    stem = STEMS[0]
    im = pil_rgb(jpeg(stem).read_bytes())
    seg = engine.set_image(from_pil(im))
    ((_, box),) = voc_boxes(stem)
    own = seg.segment_box(Box(*box), "aeroplane").mask
    got = [decode_mask(s["points"], image_width=im.width, image_height=im.height) for s in frame0]
    assert any(np.array_equal(g, own) for g in got)
    assert all(mask_iou(g, gt_union(stem)) >= IOU_FLOOR for g in got)


def test_job_target(tmp_path: Path) -> None:
    state = tmp_path / "state.jsonl"
    with FakeCvat([_task()]) as fake:
        r = _run(fake.port, tmp_path, "--job", "70", "--state", str(state))
        assert r.returncode == 0, r.stderr
        assert any(path.startswith("/api/jobs/70/annotations") and m == "PATCH" for m, path in fake.requests)
        assert sorted((s["frame"], s["label_id"]) for s in _uploaded(fake.tasks[7])) == [(0, 11), (1, 12), (2, 15)]
    assert all(json.loads(x)["target"] == "job:70" for x in state.read_text().splitlines())
