"""The correction loop's bookkeeping: webhook idempotency, persistence, version bumps."""

from __future__ import annotations

from typing import Any

import numpy as np

from backend.results import mask_to_rle
from tests.backend.conftest import LABEL_CONFIG, image_size, instance_masks, rect, voc_boxes

DOG = "2007_000063"
PROJECT = {"id": 9, "label_config": LABEL_CONFIG, "title": "p"}


def predict_dog(client: Any) -> dict[str, Any]:
    w, h = image_size(DOG)
    task = {"id": 101, "data": {"image": f"/data/upload/1/{DOG}.jpg"}, "predictions": [{"result": [rect("dog", voc_boxes(DOG)[0][1], w, h)]}]}
    r = client.post("/predict", json={"tasks": [task], "project": "9.1700000000", "label_config": LABEL_CONFIG})
    return r.get_json()["results"][0]


def event(region_id: str, updated_at: str, action: str = "ANNOTATION_CREATED", mask: np.ndarray | None = None) -> dict[str, Any]:
    w, h = image_size(DOG)
    gt = mask if mask is not None else next(g for c, g in instance_masks(DOG) if c == "dog")
    brush = {"id": region_id, "type": "brushlabels", "from_name": "mask", "to_name": "image", "original_width": w,
             "original_height": h, "image_rotation": 0, "origin": "prediction-changed",
             "value": {"format": "rle", "rle": mask_to_rle(gt), "brushlabels": ["dog"]}}
    return {
        "action": action,
        "annotation": {"id": 555, "task": 101, "result": [brush], "was_cancelled": False, "created_at": "2025-01-01T10:00:00Z",
                       "updated_at": updated_at, "completed_by": 1},
        "task": {"id": 101, "data": {"image": f"/data/upload/1/{DOG}.jpg"}, "project": 9},
        "project": PROJECT,
    }


def version(client: Any) -> str:
    return client.post("/setup", json={"project": "9.1700000000", "schema": LABEL_CONFIG}).get_json()["model_version"]


def corrections(client: Any) -> dict[str, Any]:
    return client.get("/metrics").get_json()["projects"].get("9", {}).get("corrections", {})


def test_webhook_is_idempotent_and_persistent(app_factory: Any) -> None:
    client = app_factory(CAMCUT_MIN_CORRECTIONS="1").test_client()
    v0 = version(client)
    pred = predict_dog(client)
    rid = pred["result"][0]["id"]
    r = client.post("/webhook", json=event(rid, "2025-01-01T10:00:00Z"))
    assert r.status_code == 201 and r.get_json()["status"] == "processed", r.get_json()
    c = corrections(client)["box:dog"]
    assert c["count"] == 1 and c["mean_iou_of_prediction"] > 0.8  # the prediction vs the submitted mask
    v1 = version(client)
    assert v1 != v0 and r.get_json()["model_version"] == v1  # enough corrections: threshold re-chosen, version bumped
    adapted = client.get("/metrics").get_json()["projects"]["9"]["adapted"]["box:dog"]
    assert adapted["corrections"] == 1 and adapted["technique"].startswith("F PF ")

    # the same delivery again (LS retries): not counted twice
    r = client.post("/webhook", json=event(rid, "2025-01-01T10:00:00Z"))
    assert r.status_code == 201 and r.get_json()["status"] == "duplicate"
    assert corrections(client)["box:dog"]["count"] == 1

    # a new process on the same MODEL_DIR remembers everything
    client2 = app_factory(CAMCUT_MIN_CORRECTIONS="1").test_client()
    assert client2.post("/webhook", json=event(rid, "2025-01-01T10:00:00Z")).get_json()["status"] == "duplicate"
    assert corrections(client2)["box:dog"]["count"] == 1 and version(client2) == v1

    # an update replaces the annotation's contribution; an older one is ignored
    r = client2.post("/webhook", json=event(rid, "2025-01-02T10:00:00Z", "ANNOTATION_UPDATED"))
    assert r.get_json()["status"] == "processed" and corrections(client2)["box:dog"]["count"] == 1
    assert client2.post("/webhook", json=event(rid, "2025-01-01T12:00:00Z", "ANNOTATION_UPDATED")).get_json()["status"] == "stale"
    assert corrections(client2)["box:dog"]["count"] == 1

    # deleting the annotation withdraws it
    r = client2.post("/webhook", json={"action": "ANNOTATION_DELETED", "annotations": [{"id": 555}], "project": PROJECT})
    assert r.status_code == 201 and corrections(client2) == {}
    assert version(client2) == v0


def test_version_unchanged_below_min_corrections(app_factory: Any) -> None:
    client = app_factory().test_client()  # default CAMCUT_MIN_CORRECTIONS=3
    v0 = version(client)
    rid = predict_dog(client)["result"][0]["id"]
    assert client.post("/webhook", json=event(rid, "2025-01-01T10:00:00Z")).get_json()["status"] == "processed"
    assert version(client) == v0


def test_correction_without_stored_prediction_uses_annotation_box(app_factory: Any) -> None:
    client = app_factory(CAMCUT_MIN_CORRECTIONS="1").test_client()
    w, h = image_size(DOG)
    ev = event("fresh", "2025-01-01T10:00:00Z")
    ev["annotation"]["result"].append(rect("dog", voc_boxes(DOG)[0][1], w, h, "bx"))
    assert client.post("/webhook", json=ev).get_json()["status"] == "processed"
    c = corrections(client)["box:dog"]
    assert c["count"] == 1 and c["mean_iou_of_prediction"] is None


def test_background_processing(app_factory: Any) -> None:
    app = app_factory(CAMCUT_WEBHOOK_SYNC="0")
    client = app.test_client()
    rid = predict_dog(client)["result"][0]["id"]
    assert client.post("/webhook", json=event(rid, "2025-01-01T10:00:00Z")).get_json()["status"] == "queued"
    app.config["CAMCUT_MODEL"].close()  # waits for the queued job
    assert corrections(client)["box:dog"]["count"] == 1


def test_unusable_correction_is_recorded_not_raised(app_factory: Any) -> None:
    client = app_factory().test_client()
    ev = event("x", "2025-01-01T10:00:00Z")
    ev["task"]["data"]["image"] = "/data/upload/1/missing.jpg"
    r = client.post("/webhook", json=ev)
    assert r.status_code == 201 and r.get_json()["status"] == "error" and "not found" in r.get_json()["error"]
    assert client.get("/metrics").get_json()["projects"]["9"]["events"] == {"error": 1}
