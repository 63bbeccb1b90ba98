"""Issue 13 in a real browser (headless Chromium + chromedriver, Selenium): the Data Manager
sorted by prediction score shows camcut's scores, worst mask first, without any hand setup
(the project's model version is set by camcut), and the worst task opens with its masks
labelled. Saves the two README screenshots (docs/img/label_studio_scores.png and
docs/img/label_studio_worst_mask.png).

Dependencies: ``make browser-deps`` (Debian chromium + chromium-driver, requirements-screenshot.txt).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from scripts.screenshot_label_studio import CHROMEDRIVER, CHROMIUM, login, make_driver, open_task  # noqa: E402
from tests.e2e.label_studio import CamcutBackend, create_voc_project  # noqa: E402
from tests.e2e.test_ux_e2e import until  # noqa: E402

pytestmark = pytest.mark.e2e

STEMS = ("2007_000063", "2007_000528", "2007_000480", "2007_002055", "2007_001185")
IMG = _REPO_ROOT / "docs" / "img"

ROWS_JS = """
const head = [...document.querySelectorAll('.lsf-table-head .lsf-table__cell, .lsf-table-head .lsf-th')]
    .map(c => c.textContent.trim());
const rows = [...document.querySelectorAll('.lsf-table-row')].map(r => ({
    cells: [...r.querySelectorAll(':scope > .lsf-table__cell')].map(c => c.textContent.trim()),
    img: (r.querySelector('img') || {}).src || ''}));
return {head, rows};
"""


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not Path(exe).exists():
            pytest.fail(f"{exe} not found: run `make browser-deps`", pytrace=False)
    with tempfile.TemporaryDirectory(prefix="camcut-chromium-") as profile:
        d = make_driver(1400, 900, Path(profile))
        try:
            yield d
        finally:
            d.quit()


@pytest.fixture(scope="module")
def setup(label_studio: Any, camcut_backend: CamcutBackend) -> dict[str, Any]:
    """This module's project on the session's camcut (tests/e2e/conftest.py)."""
    server = camcut_backend
    proj, by_stem = create_voc_project(label_studio, "camcut browser", STEMS)
    pid = proj["id"]
    label_studio.update_project(pid, show_collab_predictions=True)
    label_studio.connect_ml_backend(
        pid, server.url, title="camcut", is_interactive=True, timeout=300, use_for_predictions=False
    )  # as the UI does it: nothing set by hand
    label_studio.retrieve_predictions(pid)
    until("model version synced", lambda: str(label_studio.get_project(pid)["model_version"]).startswith("camcut-"))
    views = label_studio.get("/api/dm/views/", params={"project": pid})
    data = {
        "title": "by score",
        "ordering": ["tasks:predictions_score"],
        "type": "list",
        "target": "tasks",
        "hiddenColumns": {
            "explore": [
                "tasks:inner_id",
                "tasks:annotations_results",
                "tasks:annotations_ids",
                "tasks:predictions_model_versions",
                "tasks:predictions_results",
                "tasks:file_upload",
                "tasks:storage_filename",
                "tasks:created_at",
                "tasks:updated_at",
                "tasks:updated_by",
                "tasks:avg_lead_time",
                "tasks:draft_exists",
                "tasks:annotators",
                "tasks:cancelled_annotations",
            ],
            "labeling": [],
        },
        "filters": {"conjunction": "and", "items": []},
    }
    view = (
        label_studio.post("/api/dm/views/", json={"project": pid, "data": data})
        if not views
        else label_studio.patch(f"/api/dm/views/{views[0]['id']}/", json={"project": pid, "data": data})
    )
    return {"project": pid, "tasks": by_stem, "view": view["id"]}


def scores_by_task(label_studio: Any, tasks: dict[str, int]) -> dict[int, float]:
    out = {}
    for tid in tasks.values():
        [p] = [p for p in label_studio.list_predictions(tid) if str(p["model_version"]).startswith("camcut-")]
        out[tid] = float(p["score"])
    return out


def test_data_manager_sorted_by_score_then_worst_task(label_studio: Any, setup: dict[str, Any], driver: Any) -> None:
    login(driver, label_studio)
    driver.get(f"{label_studio.url}/projects/{setup['project']}/data?tab={setup['view']}")
    page = until(
        "the Data Manager lists every task",
        lambda: (lambda p: p if len(p["rows"]) == len(STEMS) else None)(driver.execute_script(ROWS_JS)),
        timeout=120,
    )
    col = next(i for i, h in enumerate(page["head"]) if "score" in h.lower())
    shown = [r["cells"][col] for r in page["rows"]]
    assert all(s and s.replace(".", "", 1).isdigit() for s in shown), (page["head"], shown)  # scores present
    values = [float(s) for s in shown]
    assert values == sorted(values), shown  # worst mask first
    expected = scores_by_task(label_studio, setup["tasks"])
    worst_stem = next(s for s in STEMS if s in page["rows"][0]["img"])
    worst = setup["tasks"][worst_stem]
    assert expected[worst] == min(expected.values())
    time.sleep(1.0)  # let the thumbnails paint before the screenshot (not a synchronisation)
    IMG.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(IMG / "label_studio_scores.png"))

    open_task(driver, label_studio, setup["project"], worst)
    labels = driver.execute_script(
        "return [...document.querySelectorAll('.lsf-tree__node_type_brushregion')].map(n => n.textContent.trim());"
    )
    [pred] = [p for p in label_studio.list_predictions(worst) if str(p["model_version"]).startswith("camcut-")]
    wanted = sorted(r["value"]["brushlabels"][0] for r in pred["result"])
    assert len(labels) == len(wanted) and all(any(w in t for w in wanted) for t in labels), (labels, wanted)
    time.sleep(1.0)  # the brush canvas paints after the Regions panel (not a synchronisation)
    driver.save_screenshot(str(IMG / "label_studio_worst_mask.png"))
