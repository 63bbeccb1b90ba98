"""Smoke test of the real Label Studio 1.23.2 used by the e2e suite (no ML backend yet).

Creates the camcut project, uploads two real VOC JPEGs, imports the VOC boxes as
predictions (percent ``rectanglelabels``) and checks they round-trip through the API,
including the media download path an ML backend uses (legacy Token and PAT/JWT).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from tests.e2e.label_studio import DEMO_LABEL_CONFIG, DEMO_LABELS, VOC_ROOT, voc_rectangles  # noqa: E402

VOC, LABELS, LABEL_CONFIG = VOC_ROOT, DEMO_LABELS, DEMO_LABEL_CONFIG

# 2007_000063: 500x375, dog (123,115)-(379,275) + a chair (not in our labels)
# 2007_000528: 500x375, cat (124,68)-(319,310)
IMAGES = {
    "2007_000063": [("dog", 24.4, 30.4, 51.4, 42.93333)],
    "2007_000528": [("cat", 24.6, 17.86667, 39.2, 64.8)],
}
MODEL_VERSION = "voc-gt"


def _image(stem: str) -> Path:
    return VOC / "JPEGImages" / f"{stem}.jpg"


def _xml(stem: str) -> Path:
    return VOC / "Annotations" / f"{stem}.xml"


@pytest.fixture(scope="module")
def project(label_studio):
    for stem in IMAGES:
        assert _image(stem).exists() and _xml(stem).exists(), f"missing VOC sample {stem}"
    proj = label_studio.create_project("camcut smoke", LABEL_CONFIG)
    task_ids = label_studio.upload_files(proj["id"], [_image(s) for s in IMAGES])
    assert len(task_ids) == len(IMAGES)

    tasks = {t["id"]: t for t in label_studio.list_tasks(proj["id"])}
    by_stem = {}
    for tid in task_ids:
        url = tasks[tid]["data"]["image"]
        stem = next(s for s in IMAGES if url.endswith(f"-{s}.jpg"))
        by_stem[stem] = tid

    label_studio.import_predictions(
        proj["id"],
        [
            {
                "task": by_stem[stem],
                "result": voc_rectangles(_xml(stem), labels=LABELS),
                "score": 1.0,
                "model_version": MODEL_VERSION,
            }
            for stem in IMAGES
        ],
    )
    return {"id": proj["id"], "tasks": by_stem}


def test_project_has_config(label_studio, project):
    p = label_studio.get_project(project["id"])
    assert p["label_config"].strip() == LABEL_CONFIG.strip()
    assert p["task_number"] == 2


def test_tasks_reference_uploaded_images(label_studio, project):
    tasks = {t["id"]: t for t in label_studio.list_tasks(project["id"])}
    assert set(tasks) == set(project["tasks"].values())
    for stem, tid in project["tasks"].items():
        url = tasks[tid]["data"]["image"]
        assert url.startswith(f"/data/upload/{project['id']}/"), url
        assert url.endswith(f"-{stem}.jpg"), url
        # what an ML backend does with hostname + access_token from /setup
        assert label_studio.fetch_data(url) == _image(stem).read_bytes()


def test_predictions_round_trip(label_studio, project):
    tasks = {t["id"]: t for t in label_studio.list_tasks(project["id"])}
    for stem, tid in project["tasks"].items():
        preds = label_studio.list_predictions(tid)
        assert len(preds) == 1, preds
        pred = preds[0]
        assert pred["task"] == tid
        assert pred["model_version"] == MODEL_VERSION
        assert pred["score"] == pytest.approx(1.0)
        expected = IMAGES[stem]
        assert len(pred["result"]) == len(expected)
        for r, (label, x, y, w, h) in zip(pred["result"], expected, strict=False):
            assert r["type"] == "rectanglelabels"
            assert r["from_name"] == "box" and r["to_name"] == "image"
            assert r["original_width"] == 500 and r["original_height"] == 375
            v = r["value"]
            assert v["rectanglelabels"] == [label]
            assert (v["x"], v["y"], v["width"], v["height"]) == pytest.approx((x, y, w, h), abs=1e-3)
        # the task listing (Data Manager API) exposes the same prediction
        assert tasks[tid]["total_predictions"] == 1


def test_json_import_with_inline_predictions(label_studio, project):
    """Tasks imported as JSON can carry predictions and point at already uploaded media."""
    stem = "2007_000528"
    url = label_studio.get_task(project["tasks"][stem])["data"]["image"]
    res = label_studio.import_tasks(
        project["id"],
        [
            {
                "data": {"image": url},
                "predictions": [
                    {"result": voc_rectangles(_xml(stem), labels=LABELS), "score": 0.5, "model_version": "inline"}
                ],
            }
        ],
    )
    assert res["task_count"] == 1 and res["prediction_count"] == 1
    (tid,) = res["task_ids"]
    preds = label_studio.list_predictions(tid)
    assert [p["model_version"] for p in preds] == ["inline"]
    assert preds[0]["result"][0]["value"]["rectanglelabels"] == ["cat"]
    label_studio.delete(f"/api/tasks/{tid}/")


def test_local_files_storage(label_studio):
    """``/data/local-files/?d=`` serving (LOCAL_FILES_SERVING_ENABLED + a Local Files storage)."""
    stem = "2007_000063"
    folder = label_studio.document_root / "voc-local"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.jpg").write_bytes(_image(stem).read_bytes())
    proj = label_studio.create_project("camcut local files", LABEL_CONFIG)
    label_studio.add_local_storage(proj["id"], folder)
    (task,) = label_studio.list_tasks(proj["id"])
    url = task["data"]["image"]
    rel = label_studio.local_file_url(folder / f"{stem}.jpg")
    assert rel == f"/data/local-files/?d=voc-local/{stem}.jpg"
    # storage sync stores f"{LABEL_STUDIO_HOST}/data/local-files/?d=..." (relative only if HOST is unset)
    assert url == label_studio.url + rel
    # DRF view (IsAuthenticated): legacy Token and Bearer access JWT both work, anonymous does not
    assert label_studio.fetch_data(url) == _image(stem).read_bytes()
    assert requests.get(url, timeout=30).status_code in (401, 403)
    access = label_studio.access_token_from_pat(_pat(label_studio))
    assert label_studio.fetch_data(url, headers={"Authorization": f"Bearer {access}"}) == _image(stem).read_bytes()


def _pat(label_studio) -> str:
    """One PAT per user is allowed; create it once and cache it on the server object."""
    if not getattr(label_studio, "_smoke_pat", None):
        label_studio._smoke_pat = label_studio.create_personal_access_token()
    return label_studio._smoke_pat


def test_personal_access_token_flow(label_studio, project):
    """PAT (JWT refresh) -> /api/token/refresh/ -> access JWT usable as ``Bearer``."""
    pat = _pat(label_studio)
    assert pat.count(".") == 2
    access = label_studio.access_token_from_pat(pat)
    bearer = {"Authorization": f"Bearer {access}"}
    r = requests.get(f"{label_studio.url}/api/current-user/whoami", headers=bearer, timeout=30)
    assert r.status_code == 200 and r.json()["email"] == label_studio.username
    # the refresh token itself is NOT accepted as a Bearer token
    r = requests.get(
        f"{label_studio.url}/api/current-user/whoami", headers={"Authorization": f"Bearer {pat}"}, timeout=30
    )
    assert r.status_code == 401
    stem, tid = next(iter(project["tasks"].items()))
    url = label_studio.get_task(tid)["data"]["image"]
    assert label_studio.fetch_data(url, headers=bearer) == _image(stem).read_bytes()
