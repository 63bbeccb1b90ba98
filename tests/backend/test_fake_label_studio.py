"""The backend tests' fake Label Studio is realistic about projects: LS sends /predict only for
projects it has, so the fake has the tests' projects and takes camcut's PATCH of their model
version (before, every /predict for project 7 logged a version_sync warning: 404)."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest

from tests.backend.conftest import LABEL_CONFIG, PROJECT_IDS, FakeLabelStudio, image_size, rect, voc_boxes

DOG = "2007_000063"


def test_predict_keeps_the_fake_projects_model_version_without_warnings(
    client: Any, ls_server: FakeLabelStudio, caplog: pytest.LogCaptureFixture
) -> None:
    assert 7 in PROJECT_IDS
    ls_server.projects[7]["model_version"] = ""
    w, h = image_size(DOG)
    n, b = voc_boxes(DOG)[0]
    task = {"id": 71, "data": {"image": f"/data/upload/1/{DOG}.jpg"}, "predictions": [{"result": [rect(n, b, w, h, "r0")]}]}
    with caplog.at_level(logging.INFO, logger="backend.version_sync"):
        r = client.post("/predict", json={"tasks": [task], "project": "7.1700000000", "label_config": LABEL_CONFIG})
        assert r.status_code == 200
        version = r.get_json()["results"][0]["model_version"]
        deadline = time.monotonic() + 30
        while ls_server.projects[7]["model_version"] != version:  # the sync runs in a thread
            assert time.monotonic() < deadline, ls_server.projects[7]
            time.sleep(0.05)  # poll interval of a deadline-bounded wait
    assert not [rec for rec in caplog.records if rec.levelno >= logging.WARNING], caplog.text
    assert any(p.startswith("/api/projects/7/") for p, _ in ls_server.requests)
