"""Label Studio (or an image host) failing in every way: each task gets an error naming the
cause, the other tasks of the same /predict batch still get their predictions."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest

from tests.reliability.conftest import CAT, DOG, LABEL_CONFIG, FaultServer, box_task, free_port


def predict(client: Any, tasks: list[dict[str, Any]], **kw: Any) -> list[dict[str, Any]]:
    r = client.post("/predict", json={"tasks": tasks, "project": "7.1700000000", "label_config": LABEL_CONFIG}, **kw)
    assert r.status_code == 200, r.get_data(as_text=True)
    out = r.get_json()["results"]
    assert len(out) == len(tasks)
    return out


def test_faulty_image_sources_fail_per_task(app_factory: Any, fault_server: FaultServer, target_server: FaultServer) -> None:
    client = app_factory(LABEL_STUDIO_URL=fault_server.url, CAMCUT_DOWNLOAD_TIMEOUT="1").test_client()
    forbidden = f"http://127.0.0.1:{target_server.port}/img/{CAT}.jpg"
    cases: list[tuple[str, str | None]] = [
        (f"/img/{CAT}.jpg", None),
        ("/status/401", "access denied (HTTP 401) (check LABEL_STUDIO_API_KEY)"),
        ("/status/403", "access denied (HTTP 403)"),
        ("/status/404", "not found (HTTP 404)"),
        ("/status/500", "HTTP 500"),
        ("/slow?s=3", "timed out after 1 s"),
        ("/cut", "download interrupted"),
        (f"/redirect?to=/img/{DOG}.jpg", None),  # allowed -> allowed
        (f"/redirect?to={forbidden}", "refused image host '127.0.0.1'"),  # allowed -> forbidden
        (f"/img/{DOG}.jpg", None),
    ]
    n_target = len(target_server.requests)
    tasks = [box_task(i, url, DOG if DOG in url else CAT) for i, (url, _) in enumerate(cases, 1)]
    out = predict(client, tasks)
    for (url, expect), res in zip(cases, out, strict=False):
        if expect is None:
            assert res["result"] and "error" not in res, (url, res)
            assert res["result"][0]["type"] == "brushlabels" and res["result"][0]["value"]["rle"]
        else:
            assert res["result"] == [] and expect in res["error"], (url, res)
    assert len(target_server.requests) == n_target  # the forbidden redirect target was never contacted


def test_label_studio_unreachable(app_factory: Any, fault_server: FaultServer) -> None:
    closed = free_port()  # nothing listens there
    client = app_factory(LABEL_STUDIO_URL=f"http://127.0.0.1:{closed}", CAMCUT_DOWNLOAD_TIMEOUT="2",
                         CAMCUT_ALLOWED_HOSTS=f"127.0.0.1:{fault_server.port}").test_client()
    out = predict(client, [box_task(1, f"/data/upload/1/{CAT}.jpg"), box_task(2, f"{fault_server.url}/img/{CAT}.jpg"),
                           box_task(3, f"s3://bucket/{CAT}.jpg")])
    assert out[0]["result"] == [] and "unreachable, cannot connect" in out[0]["error"] and str(closed) in out[0]["error"]
    assert out[1]["result"] and "error" not in out[1]
    assert out[2]["result"] == [] and "cannot connect" in out[2]["error"]  # presigning needs LS too


def test_no_secret_in_logs_or_responses(app_factory: Any, fault_server: FaultServer, caplog: pytest.LogCaptureFixture) -> None:
    key, pw = "ls-api-key-SECRET-0123456789", "basic-pass-SECRET-987654"
    app = app_factory(LABEL_STUDIO_URL=fault_server.url, LABEL_STUDIO_API_KEY=key, BASIC_AUTH_USER="ls", BASIC_AUTH_PASS=pw,
                      CAMCUT_DOWNLOAD_TIMEOUT="1")
    client = app.test_client()
    caplog.set_level(logging.DEBUG)
    auth = {"Authorization": "Basic " + base64.b64encode(f"ls:{pw}".encode()).decode()}
    tasks = [box_task(1, "/status/401"), box_task(2, f"/status/500?token={key}"), box_task(3, f"http://elsewhere.invalid/x.jpg?token={key}"),
             box_task(4, "/cut"), box_task(5, f"/redirect?to=http://10.0.0.1/x%3Ftoken%3D{key}"), {"id": 6, "data": {"image": 5}},
             box_task(7, f"/img/{CAT}.jpg")]
    bodies = []
    r = client.post("/predict", json={"tasks": tasks, "project": "7.1", "label_config": LABEL_CONFIG}, headers=auth)
    assert r.status_code == 200
    out = r.get_json()["results"]
    assert all(x["error"] for x in out[:6]) and out[6]["result"]
    bodies.append(r.get_data(as_text=True))
    # a wrong password, a webhook that fails, and the metrics
    bad = {"Authorization": "Basic " + base64.b64encode(f"ls:{pw}x".encode()).decode()}
    bodies.append(client.post("/predict", json={"tasks": []}, headers=bad).get_data(as_text=True))
    ev = {"action": "ANNOTATION_CREATED", "project": {"id": 7, "label_config": LABEL_CONFIG},
          "annotation": {"id": 1, "updated_at": "x", "result": [{"from_name": "mask", "type": "brushlabels", "id": "a",
                                                              "value": {"rle": [1, 2, 3], "brushlabels": ["Cat"]}}]},
          "task": {"id": 1, "data": {"image": f"/status/403?token={key}"}}}
    bodies.append(client.post("/webhook", json=ev, headers=auth).get_data(as_text=True))
    bodies.append(client.get("/metrics", headers=auth).get_data(as_text=True))
    text = caplog.text + "".join(r.getMessage() + repr(r.args) for r in caplog.records) + "".join(bodies)
    assert "access denied" in caplog.text  # the failures are logged ...
    assert key not in text and pw not in text  # ... without credentials
