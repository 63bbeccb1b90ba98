"""End to end: a real Label Studio 1.23.2 talks to our backend running under gunicorn.

Project with RectangleLabels + BrushLabels + Choices, real VOC JPEGs uploaded, VOC boxes
imported as predictions; the backend is connected through /api/ml, predictions are retrieved
for all tasks (batch /predict with the boxes LS sends), then interactive annotating with a
rectangle. Every returned mask is decoded with the SDK and compared with the VOC instance.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle
from PIL import Image

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from tests.e2e.label_studio import (  # noqa: E402
    DEMO_LABEL_CONFIG,
    DEMO_LABELS,
    VOC_ROOT,
    CamcutBackend,
    create_voc_project,
    voc_rectangles,
)

pytestmark = pytest.mark.e2e

VOC, LABELS, LABEL_CONFIG = VOC_ROOT, DEMO_LABELS, DEMO_LABEL_CONFIG
STEMS = ("2007_000063", "2007_000528")  # dog (+ a chair, not a label), cat
# Measured IoU with the VOC instance: dog 0.90 (batch and interactive), cat 0.58.
IOU_FLOOR = {"dog": 0.75, "cat": 0.45}


def decode(res: dict[str, Any]) -> np.ndarray:
    w, h = res["original_width"], res["original_height"]
    flat = np.asarray(decode_rle(res["value"]["rle"]))
    assert flat.size == w * h * 4, "RLE does not decode to the image's size"
    return flat.reshape(h, w, 4)[:, :, 3] > 0


def gt_instances(stem: str) -> list[np.ndarray]:
    obj = np.array(Image.open(VOC / "SegmentationObject" / f"{stem}.png"))
    return [obj == i for i in np.unique(obj) if i not in (0, 255)]


def best_iou(mask: np.ndarray, stem: str) -> float:
    return max(float((mask & g).sum() / (mask | g).sum()) for g in gt_instances(stem))


@pytest.fixture(scope="module")
def backend(label_studio: Any, camcut_backend: CamcutBackend) -> Iterator[str]:
    """The session's camcut (tests/e2e/conftest.py); the log is checked here for this module's
    requests and again when the session stops it."""
    yield camcut_backend.url
    log = camcut_backend.log_path.read_text(errors="replace")
    assert label_studio.token not in log, "the API key leaked into the backend log"


@pytest.fixture(scope="module")
def project(label_studio: Any, backend: str) -> dict[str, Any]:
    proj, by_stem = create_voc_project(label_studio, "camcut e2e", STEMS)
    ml = label_studio.connect_ml_backend(proj["id"], backend, title="camcut", is_interactive=True, timeout=300)
    return {"id": proj["id"], "tasks": by_stem, "ml": ml}


def test_retrieve_predictions_for_all_tasks(label_studio: Any, project: dict[str, Any]) -> None:
    label_studio.retrieve_predictions(project["id"])
    for stem, tid in project["tasks"].items():
        ours = [p for p in label_studio.list_predictions(tid) if str(p.get("model_version", "")).startswith("camcut-")]
        assert len(ours) == 1, f"task {tid}: {label_studio.list_predictions(tid)}"
        results = ours[0]["result"]
        label = next(
            n
            for n in LABELS
            if any(
                r["value"]["rectanglelabels"] == [n] for r in voc_rectangles(VOC / "Annotations" / f"{stem}.xml", labels=LABELS)
            )
        )
        assert [r["value"]["brushlabels"] for r in results] == [[label]]
        with Image.open(VOC / "JPEGImages" / f"{stem}.jpg") as im:
            size = im.size
        res = results[0]
        assert (res["type"], res["from_name"], res["to_name"]) == ("brushlabels", "mask", "image")
        assert (res["original_width"], res["original_height"]) == size
        iou = best_iou(decode(res), stem)
        print(f"e2e batch {stem} {label}: IoU {iou:.3f}")
        assert iou > IOU_FLOOR[label]


def test_interactive_rectangle(label_studio: Any, project: dict[str, Any]) -> None:
    stem = "2007_000063"
    [box] = voc_rectangles(VOC / "Annotations" / f"{stem}.xml", labels=("dog",))
    box = {**box, "id": "user-box", "origin": "manual"}
    out = label_studio.interactive_annotating(project["ml"]["id"], project["tasks"][stem], {"result": [box]})
    assert "data" in out, out
    [res] = out["data"]["result"]
    assert res["value"]["brushlabels"] == ["dog"]
    iou = best_iou(decode(res), stem)
    print(f"e2e interactive {stem} dog: IoU {iou:.3f}")
    assert iou > IOU_FLOOR["dog"]
