"""The correction loop's bookkeeping: webhooks are notifications, what is learned is read back
from (fake) Label Studio; idempotency, persistence, version bumps, forged events."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from backend.results import mask_to_rle
from tests.backend.conftest import LABEL_CONFIG, FakeLabelStudio, image_size, instance_masks, rect, voc_boxes
from tests.pgserver import both

pytestmark = both  # the store on SQLite and on PostgreSQL

DOG = "2007_000063"
PROJECT = {"id": 9, "label_config": LABEL_CONFIG, "title": "p"}
TASK = {"id": 101, "data": {"image": f"/data/upload/1/{DOG}.jpg"}, "project": 9}


@pytest.fixture(autouse=True)
def ls_records(ls_server: FakeLabelStudio) -> Iterator[FakeLabelStudio]:
    """Project 9 and task 101 exist in the fake Label Studio; annotations are added per test."""
    ls_server.projects[9] = PROJECT
    ls_server.tasks[101] = TASK
    yield ls_server
    ls_server.annotations.clear()


def predict_dog(client: Any) -> dict[str, Any]:
    w, h = image_size(DOG)
    task = {**TASK, "predictions": [{"result": [rect("dog", voc_boxes(DOG)[0][1], w, h)]}]}
    r = client.post("/predict", json={"tasks": [task], "project": "9.1700000000", "label_config": LABEL_CONFIG})
    return r.get_json()["results"][0]


def annotation(region_id: str, updated_at: str, mask: np.ndarray | None = None, aid: int = 555) -> dict[str, Any]:
    """An annotation as LS records it: a brush mask (default: the VOC dog) for the predicted region."""
    w, h = image_size(DOG)
    gt = mask if mask is not None else next(g for c, g in instance_masks(DOG) if c == "dog")
    brush = {
        "id": region_id,
        "type": "brushlabels",
        "from_name": "mask",
        "to_name": "image",
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "origin": "prediction-changed",
        "value": {"format": "rle", "rle": mask_to_rle(gt), "brushlabels": ["dog"]},
    }
    return {
        "id": aid,
        "task": 101,
        "project": 9,
        "result": [brush],
        "was_cancelled": False,
        "created_at": "2025-01-01T10:00:00Z",
        "updated_at": updated_at,
        "completed_by": 1,
    }


def event(ann: dict[str, Any], action: str = "ANNOTATION_CREATED") -> dict[str, Any]:
    """The webhook LS sends: the annotation and task inline (camcut reads neither)."""
    return {"action": action, "annotation": ann, "task": TASK, "project": PROJECT}


def deleted(aid: int = 555) -> dict[str, Any]:
    return {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": aid}], "project": PROJECT}


def version(client: Any) -> str:
    return client.post("/setup", json={"project": "9.1700000000", "schema": LABEL_CONFIG}).get_json()["model_version"]


def corrections(client: Any) -> dict[str, Any]:
    return client.get("/metrics").get_json()["projects"].get("9", {}).get("corrections", {})


def test_webhook_is_idempotent_and_persistent(app_factory: Any, ls_records: FakeLabelStudio) -> None:
    client = app_factory(CAMCUT_MIN_CORRECTIONS="1").test_client()
    v0 = version(client)
    rid = predict_dog(client)["result"][0]["id"]
    ls_records.annotations[555] = annotation(rid, "2025-01-01T10:00:00Z")
    r = client.post("/webhook", json=event(ls_records.annotations[555]))
    assert r.status_code == 201 and r.get_json()["status"] == "processed", r.get_json()
    c = corrections(client)["box:dog"]
    assert c["count"] == 1 and c["mean_iou_of_prediction"] > 0.8  # the prediction vs the submitted mask
    v1 = version(client)
    assert v1 != v0 and r.get_json()["model_version"] == v1  # enough corrections: threshold re-chosen, version bumped
    adapted = client.get("/metrics").get_json()["projects"]["9"]["adapted"]["box:dog"]
    assert adapted["corrections"] == 1 and adapted["technique"].startswith("F PF ")

    # the same delivery again (LS retries): LS's record has not changed, not counted twice
    r = client.post("/webhook", json=event(ls_records.annotations[555]))
    assert r.status_code == 201 and r.get_json()["status"] == "unchanged"
    assert corrections(client)["box:dog"]["count"] == 1

    # a new process on the same MODEL_DIR remembers everything
    client2 = app_factory(CAMCUT_MIN_CORRECTIONS="1").test_client()
    assert client2.post("/webhook", json=event(ls_records.annotations[555])).get_json()["status"] == "unchanged"
    assert corrections(client2)["box:dog"]["count"] == 1 and version(client2) == v1

    # an update in LS replaces the annotation's contribution
    ls_records.annotations[555] = annotation(rid, "2025-01-02T10:00:00Z")
    r = client2.post("/webhook", json=event(ls_records.annotations[555], "ANNOTATION_UPDATED"))
    assert r.get_json()["status"] == "processed" and corrections(client2)["box:dog"]["count"] == 1

    # deleting the annotation in LS withdraws it
    del ls_records.annotations[555]
    r = client2.post("/webhook", json=deleted())
    assert r.status_code == 201 and r.get_json()["status"] == "deleted" and corrections(client2) == {}
    assert version(client2) == v0


def test_forged_events_learn_nothing(app_factory: Any, ls_records: FakeLabelStudio) -> None:
    """The attack: unauthenticated ANNOTATION_CREATED bodies with masks chosen to drag the box
    threshold down switched F PF 0.7 to F PF 0.1 and changed the model version. Annotations that
    Label Studio does not have are not learned from, whatever the body says."""
    client = app_factory(CAMCUT_MIN_CORRECTIONS="3").test_client()
    v0 = version(client)
    rid = predict_dog(client)["result"][0]["id"]
    w, h = image_size(DOG)
    everything = np.ones((h, w), bool)  # "the dog is the whole image": favours the lowest t
    for aid in (9001, 9002, 9003):
        r = client.post("/webhook", json=event(annotation(rid, "2025-01-01T10:00:00Z", everything, aid)))
        assert r.status_code == 201, r.get_json()
    metrics = client.get("/metrics").get_json()["projects"].get("9", {})
    assert metrics.get("corrections", {}) == {} and metrics.get("adapted", {}) == {}
    assert version(client) == v0


def test_forged_future_updated_at_and_forged_delete(app_factory: Any, ls_records: FakeLabelStudio) -> None:
    """A body with a far-future ``updated_at`` made every real event for that annotation
    "stale" forever; a forged ANNOTATIONS_DELETED removed real corrections."""
    client = app_factory(CAMCUT_MIN_CORRECTIONS="1").test_client()
    rid = predict_dog(client)["result"][0]["id"]
    ls_records.annotations[555] = annotation(rid, "2025-01-01T10:00:00Z")
    forged = annotation(rid, "2999-01-01T00:00:00Z")
    forged["result"] = []
    assert client.post("/webhook", json=event(forged, "ANNOTATION_UPDATED")).status_code == 201
    assert corrections(client)["box:dog"]["count"] == 1  # LS's record was learned, not the forged body
    ls_records.annotations[555] = annotation(rid, "2025-01-03T10:00:00Z")
    r = client.post("/webhook", json=event(ls_records.annotations[555], "ANNOTATION_UPDATED"))
    assert r.get_json()["status"] == "processed", r.get_json()
    events = client.get("/metrics").get_json()["projects"]["9"]["events"]
    assert "stale" not in events

    r = client.post("/webhook", json=deleted())  # LS still has annotation 555
    assert r.status_code == 201 and r.get_json()["status"] == "unchanged"
    assert corrections(client)["box:dog"]["count"] == 1


def test_without_label_studio_nothing_is_learned_until_configured(app_factory: Any, ls_records: FakeLabelStudio) -> None:
    host = ls_records.url.split("//", 1)[1]
    client = app_factory(
        LABEL_STUDIO_URL="", LABEL_STUDIO_API_KEY="", CAMCUT_MIN_CORRECTIONS="1", CAMCUT_ALLOWED_HOSTS=host
    ).test_client()
    ls_records.annotations[555] = annotation("r-x", "2025-01-01T10:00:00Z")
    ev = event(ls_records.annotations[555])
    ev["task"] = {**TASK, "data": {"image": f"{ls_records.url}/img/{DOG}.jpg"}}  # a body one could learn from alone
    r = client.post("/webhook", json=ev)
    assert corrections(client) == {}  # nothing learned from an unverifiable body
    assert r.status_code == 201 and r.get_json()["status"] == "queued" and r.get_json()["learning"].startswith("off")
    health = client.get("/health").get_json()
    assert health["status"] == "UP" and health["learning"].startswith("off: LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
    metrics = client.get("/metrics").get_json()
    assert metrics["learning"].startswith("off") and metrics["webhooks_waiting"] == 1
    assert corrections(client) == {}
    # the event was kept: a backend started with Label Studio's URL and key processes it
    client2 = app_factory(CAMCUT_MIN_CORRECTIONS="1").test_client()
    assert client2.get("/health").get_json()["learning"] == "on"
    assert [c["count"] for c in corrections(client2).values()] == [1]  # no stored prediction: a class correction
    assert client2.get("/metrics").get_json()["webhooks_waiting"] == 0


def test_webhook_with_basic_auth_and_secret(app_factory: Any, ls_records: FakeLabelStudio) -> None:
    """LS's webhook for an ML backend sends no credentials: with basic auth on every real
    webhook got 401. It is a notification, so it is accepted; CAMCUT_WEBHOOK_SECRET gates it."""
    ls_records.annotations[555] = annotation("r-y", "2025-01-01T10:00:00Z")
    client = app_factory(BASIC_AUTH_USER="ls", BASIC_AUTH_PASS="pw-123456").test_client()
    r = client.post("/webhook", json=event(ls_records.annotations[555]))
    assert r.status_code == 201 and r.get_json()["status"] == "processed", r.get_data(as_text=True)
    assert client.post("/predict", json={"tasks": []}).status_code == 401  # the rest stays behind basic auth

    client = app_factory(CAMCUT_WEBHOOK_SECRET="s3cret-value").test_client()
    ls_records.annotations[556] = annotation("r-z", "2025-01-01T10:00:00Z", aid=556)
    assert client.post("/webhook", json=event(ls_records.annotations[556])).status_code == 401
    wrong = {"X-Camcut-Webhook-Secret": "wrong"}
    assert client.post("/webhook", json=event(ls_records.annotations[556]), headers=wrong).status_code == 401
    r = client.post("/webhook", json=event(ls_records.annotations[556]), headers={"X-Camcut-Webhook-Secret": "s3cret-value"})
    assert r.status_code == 201 and r.get_json()["status"] == "processed"
    client = app_factory(CAMCUT_WEBHOOK_SECRET="s3cret-value", BASIC_AUTH_USER="ls", BASIC_AUTH_PASS="pw-123456").test_client()
    good = {"Authorization": "Basic " + base64.b64encode(b"ls:pw-123456").decode()}
    assert client.post("/webhook", json=event(ls_records.annotations[556]), headers=good).status_code == 201
    assert client.post("/webhook", json=event(ls_records.annotations[556])).status_code == 401


def test_version_unchanged_below_min_corrections(app_factory: Any, ls_records: FakeLabelStudio) -> None:
    client = app_factory().test_client()  # default CAMCUT_MIN_CORRECTIONS=3
    v0 = version(client)
    rid = predict_dog(client)["result"][0]["id"]
    ls_records.annotations[555] = annotation(rid, "2025-01-01T10:00:00Z")
    assert client.post("/webhook", json=event(ls_records.annotations[555])).get_json()["status"] == "processed"
    assert version(client) == v0


def test_correction_without_stored_prediction_uses_annotation_box(app_factory: Any, ls_records: FakeLabelStudio) -> None:
    client = app_factory(CAMCUT_MIN_CORRECTIONS="1").test_client()
    w, h = image_size(DOG)
    ann = annotation("fresh", "2025-01-01T10:00:00Z")
    ann["result"].append(rect("dog", voc_boxes(DOG)[0][1], w, h, "bx"))
    ls_records.annotations[555] = ann
    assert client.post("/webhook", json=event(ann)).get_json()["status"] == "processed"
    c = corrections(client)["box:dog"]
    assert c["count"] == 1 and c["mean_iou_of_prediction"] is None


def test_background_processing(app_factory: Any, ls_records: FakeLabelStudio) -> None:
    app = app_factory(CAMCUT_WEBHOOK_SYNC="0")
    client = app.test_client()
    rid = predict_dog(client)["result"][0]["id"]
    ls_records.annotations[555] = annotation(rid, "2025-01-01T10:00:00Z")
    assert client.post("/webhook", json=event(ls_records.annotations[555])).get_json()["status"] == "queued"
    model = app.config["CAMCUT_MODEL"]
    import time

    deadline = time.monotonic() + 60
    while model.corrections.inbox.waiting() and time.monotonic() < deadline:
        time.sleep(0.05)  # poll interval of a deadline-bounded wait for the background thread
    model.close()
    assert corrections(client)["box:dog"]["count"] == 1


def test_unusable_correction_is_recorded_not_raised(app_factory: Any, ls_records: FakeLabelStudio) -> None:
    client = app_factory().test_client()
    ls_records.tasks[102] = {"id": 102, "data": {"image": "/data/upload/1/missing.jpg"}, "project": 9}
    ls_records.annotations[557] = {**annotation("x", "2025-01-01T10:00:00Z", aid=557), "task": 102}
    r = client.post("/webhook", json=event(ls_records.annotations[557]))
    assert (
        r.status_code == 201
        and r.get_json()["status"] == "error"
        and "Label Studio refused the image (HTTP 4xx)" in r.get_json()["error"]
    )
    assert client.get("/metrics").get_json()["projects"]["9"]["events"] == {"error": 1}


def test_full_inbox_answers_503(app_factory: Any) -> None:
    client = app_factory(LABEL_STUDIO_API_KEY="", CAMCUT_MAX_PENDING_EVENTS="2").test_client()
    for aid in (1, 2):
        assert client.post("/webhook", json=deleted(aid)).status_code == 201
    r = client.post("/webhook", json=deleted(3))
    assert r.status_code == 503 and r.headers["Retry-After"] == "5"


def test_two_strokes_on_one_prediction_are_one_correction(app_factory: Any, ls_records: FakeLabelStudio) -> None:
    """An object painted in two brush results that both correct the predicted dog: each got the
    prediction's region id as its key, the second broke the store's primary key, and the event
    was given back and retried forever (seen end to end). Now they are one corrected mask."""
    client = app_factory(CAMCUT_MIN_CORRECTIONS="1").test_client()
    rid = predict_dog(client)["result"][0]["id"]
    gt = next(g for c, g in instance_masks(DOG) if c == "dog")
    ys = np.nonzero(gt.any(axis=1))[0]
    mid = int(ys[len(ys) // 2])
    top, bottom = gt.copy(), gt.copy()
    top[mid:] = False
    bottom[:mid] = False
    ann = annotation(rid, "2025-01-01T10:00:00Z", mask=top)
    second = annotation("stroke2", "2025-01-01T10:00:00Z", mask=bottom)["result"][0]
    ann["result"].append(second)
    ls_records.annotations[555] = ann
    r = client.post("/webhook", json=event(ann))
    assert r.status_code == 201 and r.get_json()["status"] == "processed", r.get_json()
    c = corrections(client)["box:dog"]
    assert c["count"] == 1 and c["mean_iou_of_prediction"] > 0.8  # against the union: the whole dog


def test_an_event_whose_writes_always_fail_is_recorded_not_retried_for_ever(
    app_factory: Any, ls_records: FakeLabelStudio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure is injected (the duplicate region key that caused it is fixed, test above): the
    store refuses this annotation's writes every time while the database answers. Each retry
    re-read LS and re-ran the CNN and the cuts, for ever; now the POISON_ATTEMPTS-th failure is
    recorded as the event's error and the inbox is empty."""
    import sqlite3

    from backend import corrections as C

    app = app_factory(CAMCUT_MIN_CORRECTIONS="1")
    client = app.test_client()
    rid = predict_dog(client)["result"][0]["id"]
    ls_records.annotations[555] = annotation(rid, "2025-01-01T10:00:00Z")

    def refuse(*args: Any, **kw: Any) -> None:
        raise sqlite3.IntegrityError("injected: these writes always fail")

    monkeypatch.setattr(C, "write_corrections", refuse)
    loop = app.config["CAMCUT_MODEL"].corrections
    assert loop.inbox.put("9", [(555, "ANNOTATION_CREATED")])
    for attempt in range(C.POISON_ATTEMPTS):
        item = loop.inbox.claim(loop.owner)
        assert item is not None and item.attempts == attempt
        if attempt < C.POISON_ATTEMPTS - 1:
            with pytest.raises(sqlite3.IntegrityError):
                loop.run(item)
            loop.inbox.release(item, loop.owner, "given back")  # what the background loop does (_give_back)
    res = loop.run(item)
    assert res["status"] == "error" and f"not stored after {C.POISON_ATTEMPTS} attempts" in res["error"], res
    assert loop.inbox.waiting() == 0 and corrections(client) == {}
