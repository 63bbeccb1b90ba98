"""Interactive prompts must not pile up stored prediction rows (one row per prompt: 200 prompts on
one task once stored 200 rows); the batch prediction of the task and the newest prompts stay."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from backend.store import INTERACTIVE_KEPT, Store
from tests.backend.conftest import LABEL_CONFIG, image_size, rect, voc_boxes
from tests.pgserver import both

pytestmark = both  # the store on SQLite and on PostgreSQL

DOG = "2007_000063"
PROMPTS = 40


def rows(model_dir: Path, url: str, task_id: int) -> list[tuple[str, int]]:
    with Store(model_dir, url).transaction(write=False) as db:
        found = db.execute(
            "SELECT region_id, interactive FROM predictions WHERE task_id=? ORDER BY created, region_id", (task_id,)
        ).fetchall()
    return [(str(r), int(i)) for r, i in found]


def test_interactive_prompts_keep_a_bounded_number_of_rows(app_factory: Any, tmp_path: Path, database_url: str) -> None:
    client = app_factory().test_client()
    w, h = image_size(DOG)
    box = voc_boxes(DOG)[0][1]
    task = {"id": 77, "data": {"image": f"/data/upload/1/{DOG}.jpg"}, "predictions": [{"result": [rect("dog", box, w, h)]}]}
    r = client.post("/predict", json={"tasks": [task], "project": "5.1", "label_config": LABEL_CONFIG})
    [batch_region] = [res["id"] for res in r.get_json()["results"][0]["result"]]
    returned = []
    for i in range(PROMPTS):  # the annotator draws box after box on the same task
        x0, y0, x1, y1 = box
        nudged = (x0 + i % 5, y0, x1 - i % 3, y1)
        ctx = {"result": [{**rect("dog", nudged, w, h, f"user{i}"), "origin": "manual"}]}
        r = client.post(
            "/predict",
            json={
                "tasks": [{"id": 77, "data": task["data"]}],
                "project": "5.1",
                "label_config": LABEL_CONFIG,
                "params": {"context": ctx},
            },
        )
        [res] = r.get_json()["results"][0]["result"]
        returned.append(res["id"])
    stored = rows(tmp_path / "model_dir", database_url, 77)
    interactive = [rid for rid, flag in stored if flag]
    print(f"{PROMPTS} interactive prompts on one task: {len(stored)} stored rows ({len(interactive)} interactive)")
    assert len(interactive) == INTERACTIVE_KEPT < PROMPTS
    assert interactive == returned[-INTERACTIVE_KEPT:]  # the newest prompts, the ones an annotation may still hold
    assert (batch_region, 0) in stored  # the batch prediction is not pushed out by prompts
    # a batch prediction of the task replaces everything, prompts included
    client.post("/predict", json={"tasks": [task], "project": "5.1", "label_config": LABEL_CONFIG})
    assert [flag for _, flag in rows(tmp_path / "model_dir", database_url, 77)] == [0]
