"""Issue 13 against a real Label Studio 1.23.2 and camcut under gunicorn:

1. *Connect model* as a user does it (LS sets the project's model_version to the backend's
   title): after Retrieve Predictions the project's model_version becomes camcut's version and
   the Data Manager's prediction-score column has values;
2. a task whose image is missing gets no stored prediction (LS retries it) and its reason is in
   camcut's /metrics;
5. a negative keypoint alone (Alt-click) answers with the task's mask minus the clicked part.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from tests.e2e.label_studio import CamcutBackend, create_voc_project  # noqa: E402
from tests.e2e.test_backend_e2e import decode  # noqa: E402

pytestmark = pytest.mark.e2e

STEMS = ("2007_000063", "2007_000528")  # dog (+ chair), cat
_L = '<Label value="dog"/><Label value="cat"/><Label value="person"/>'
CONFIG = f"""<View>
  <Image name="image" value="$image" zoom="true"/>
  <RectangleLabels name="box" toName="image" smart="true">{_L}</RectangleLabels>
  <KeyPointLabels name="click" toName="image" smart="true">{_L}</KeyPointLabels>
  <BrushLabels name="mask" toName="image">{_L}</BrushLabels>
</View>"""


def until(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.25)  # poll interval of a deadline-bounded wait


@pytest.fixture(scope="module")
def backend(camcut_backend: CamcutBackend) -> str:
    """The session's camcut (tests/e2e/conftest.py): this module's project is its own."""
    return camcut_backend.url


@pytest.fixture(scope="module")
def project(label_studio: Any, backend: str) -> dict[str, Any]:
    proj, by_stem = create_voc_project(label_studio, "camcut ux", STEMS, label_config=CONFIG)
    missing = label_studio.import_tasks(proj["id"], [{"image": "/data/upload/999/no_such_image.jpg"}])
    label_studio.update_project(proj["id"], show_collab_predictions=True)
    # as the UI's Connect model does it: LS itself sets model_version to the title
    ml = label_studio.connect_ml_backend(
        proj["id"], backend, title="camcut", is_interactive=True, timeout=300, use_for_predictions=False
    )
    tasks = {t["id"] for t in label_studio.list_tasks(proj["id"])}
    bad = sorted(tasks - set(by_stem.values()))
    assert len(bad) == 1, missing
    label_studio.retrieve_predictions(proj["id"])
    return {"id": proj["id"], "tasks": by_stem, "ml": ml, "missing": bad[0]}


def test_model_version_follows_camcut_and_scores_show(label_studio: Any, project: dict[str, Any]) -> None:
    dog = project["tasks"]["2007_000063"]
    ours = [p for p in label_studio.list_predictions(dog) if str(p["model_version"]).startswith("camcut-")]
    assert len(ours) == 1
    version = ours[0]["model_version"]
    until("project model_version = camcut's", lambda: label_studio.get_project(project["id"])["model_version"] == version)
    # the Data Manager's view of the tasks, with the score column LS computes
    tasks = label_studio.get("/api/tasks/", params={"project": project["id"], "fields": "all"})
    rows = {t["id"]: t for t in (tasks["tasks"] if isinstance(tasks, dict) else tasks)}
    for tid in project["tasks"].values():
        assert rows[tid].get("predictions_score") is not None, rows[tid]


def test_failed_task_is_not_stored_and_reaches_metrics(label_studio: Any, backend: str, project: dict[str, Any]) -> None:
    tid = project["missing"]
    assert [p for p in label_studio.list_predictions(tid) if str(p["model_version"]).startswith("camcut-")] == []
    failures = requests.get(f"{backend}/metrics", timeout=10).json()["recent_failures"]
    assert any(f["task"] == tid and "no_such_image.jpg" in f["error"] for f in failures), failures  # LS answers 500
    # not stored, so asked again next time (before: an empty 0.00 prediction kept it from being retried)
    n = len(failures)
    label_studio.retrieve_predictions(project["id"], [tid])
    assert len(requests.get(f"{backend}/metrics", timeout=10).json()["recent_failures"]) == n + 1


def test_negative_click_alone_cuts_from_the_mask(label_studio: Any, project: dict[str, Any]) -> None:
    dog = project["tasks"]["2007_000063"]
    [pred] = [p for p in label_studio.list_predictions(dog) if str(p["model_version"]).startswith("camcut-")]
    before = decode(pred["result"][0])
    h, w = before.shape
    ys, xs = np.nonzero(before)
    i = int(np.argmax(xs))  # the mask's right-most pixel: a spot to remove
    x, y = float(xs[i] - 3), float(ys[i])
    click = {
        "id": "neg",
        "type": "keypointlabels",
        "from_name": "click",
        "to_name": "image",
        "original_width": w,
        "original_height": h,
        "is_positive": False,
        "value": {"x": x * 100 / w, "y": y * 100 / h, "width": 0.5, "keypointlabels": ["dog"]},
    }
    out = label_studio.interactive_annotating(project["ml"]["id"], dog, {"result": [click]})
    assert "data" in out, out
    [res] = out["data"]["result"]
    after = decode(res)
    assert res["value"]["brushlabels"] == ["dog"] and after.any()
    assert not (after & ~before).any() and not after[int(y), int(x)] and after.sum() < before.sum()
