"""End to end, with basic auth on: annotations submitted through a real Label Studio 1.23.2 reach
camcut through the webhook LS itself created for the ML backend, and are learned.

LS 1.23.2 creates that webhook (``ml/models.py: create_ml_webhook``: url ``<backend>/webhook``,
``send_for_all_actions``) without headers, and sends webhooks with ``Webhook.headers`` only
(``webhooks/utils.py: run_webhook_sync``), never the ML backend's basic-auth user/password.
So every real webhook used to get 401 and learning silently stopped. camcut takes a webhook
as a notification and reads the annotation back from LS's API with its key.
"""

from __future__ import annotations

import base64
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from backend.results import mask_to_rle  # noqa: E402
from tests.e2e.label_studio import VOC_ROOT, CamcutBackend, create_voc_project  # noqa: E402

pytestmark = pytest.mark.e2e

STEM = "2007_000063"  # a dog
USER, PW = "ls-ml", "pw-e2e-123456"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PW}".encode()).decode()}


@pytest.fixture(scope="module")
def backend(label_studio: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CamcutBackend]:
    log_path = _REPO_ROOT / "out" / "e2e" / "backend-webhook.log"
    server = CamcutBackend(label_studio, log_path, tmp_path_factory.mktemp("camcut-webhook") / "model_dir")
    server.env.update(BASIC_AUTH_USER=USER, BASIC_AUTH_PASS=PW, CAMCUT_MIN_CORRECTIONS="1")
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


def metrics(backend: CamcutBackend) -> dict[str, Any]:
    r = requests.get(f"{backend.url}/metrics", headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(cond: Any, what: str, backend: CamcutBackend, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        m = metrics(backend)
        if cond(m):
            return m
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s: metrics {m}\nbackend log:\n{backend.tail()}")
        time.sleep(0.5)  # poll interval of the deadline-bounded wait for LS's webhook + our worker


def dog_mask() -> np.ndarray:
    """The VOC ground truth of the image's one dog (class 12 of SegmentationClass)."""
    return np.array(Image.open(VOC_ROOT / "SegmentationClass" / f"{STEM}.png")) == 12


def model_version(backend: CamcutBackend, pid: int, label_config: str) -> str:
    r = requests.post(f"{backend.url}/setup", json={"project": f"{pid}.1", "schema": label_config}, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["model_version"]


def test_submitted_annotation_is_learned_through_ls_webhook_with_basic_auth(label_studio: Any, backend: CamcutBackend) -> None:
    assert requests.post(f"{backend.url}/predict", json={"tasks": []}, timeout=30).status_code == 401  # basic auth is on
    proj, by_stem = create_voc_project(label_studio, "camcut webhook e2e", (STEM,))
    pid, tid = proj["id"], by_stem[STEM]
    label_studio.connect_ml_backend(pid, backend.url, title="camcut", basic_auth=(USER, PW), timeout=300)
    hooks = [h for h in label_studio.list_webhooks(pid) if h["url"].rstrip("/") == f"{backend.url}/webhook"]
    assert len(hooks) == 1 and not hooks[0].get("headers"), hooks  # LS's own webhook: no credentials at all
    assert metrics(backend)["learning"] == "on"
    v0 = model_version(backend, pid, proj["label_config"])

    label_studio.retrieve_predictions(pid)
    [pred] = [p for p in label_studio.list_predictions(tid) if str(p.get("model_version", "")).startswith("camcut-")]
    [res] = pred["result"]
    corrected = {
        **res,
        "origin": "prediction-changed",
        "value": {"format": "rle", "rle": mask_to_rle(dog_mask()), "brushlabels": res["value"]["brushlabels"]},
    }
    ann = label_studio.create_annotation(tid, [corrected])

    m = wait_for(lambda m: "box:dog" in m["projects"].get(str(pid), {}).get("corrections", {}), "the annotation learned", backend)
    entry = m["projects"][str(pid)]
    print(f"e2e webhook: learned {entry['corrections']}, adapted {entry['adapted']}")
    assert entry["corrections"]["box:dog"]["count"] == 1
    assert entry["corrections"]["box:dog"]["mean_iou_of_prediction"] > 0.75  # the prediction vs the submitted mask
    assert entry["adapted"]["box:dog"]["corrections"] == 1 and model_version(backend, pid, proj["label_config"]) != v0

    # a forged body for that annotation, claiming it was deleted: LS still has it, nothing changes
    forged = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": ann["id"]}], "project": {"id": pid}}
    assert requests.post(f"{backend.url}/webhook", json=forged, timeout=30).status_code == 201
    wait_for(lambda m: m["webhooks_waiting"] == 0, "the forged event processed", backend)
    assert metrics(backend)["projects"][str(pid)]["corrections"]["box:dog"]["count"] == 1

    # deleted in Label Studio: LS's own ANNOTATIONS_DELETED webhook withdraws it
    label_studio.delete(f"/api/annotations/{ann['id']}/")
    wait_for(lambda m: not m["projects"].get(str(pid), {}).get("corrections"), "the deletion honoured", backend)
    assert model_version(backend, pid, proj["label_config"]) == v0
