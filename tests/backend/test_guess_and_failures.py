"""Issue 13 items 2 and 3: a failed task is not answered as a prediction (LS would store it) and
reaches /metrics; with no prompt the CNN chooses among the project's label classes."""

from __future__ import annotations

from typing import Any

import pytest

from backend.bulk.worker import predict_and_post
from model.cnn import ClassScore, renormalised
from tests.backend.conftest import LABEL_CONFIG
from tests.backend.test_predict import check_result, predict

CAT_NO_GUESS = "2007_003525"  # a cat whose raw guess reaches no class at p 0.2 (cat 0.73 among dog/cat/person)


def test_renormalised_over_the_project_classes() -> None:
    scores = [ClassScore("dog", 0.15), ClassScore("cat", 0.05), ClassScore("car", 0.5), ClassScore("person", 0.0)]
    r = renormalised(scores, ["dog", "cat", "person"])
    assert [s.voc_class for s in r] == ["dog", "cat", "person"]
    assert [round(s.probability, 6) for s in r] == [0.75, 0.25, 0.0]
    assert renormalised(scores, ["tvmonitor"]) == []
    assert [s.probability for s in renormalised([ClassScore("a", 0.0), ClassScore("b", 0.0)], ["a", "b"])] == [0.5, 0.5]


def test_no_prompt_guesses_among_the_project_labels(client: Any) -> None:
    [pred] = predict(client, [{"id": 61, "data": {"image": f"/data/upload/1/{CAT_NO_GUESS}.jpg"}}])
    assert pred["mode"] == "guess" and "error" not in pred, pred
    labels = [r["value"]["brushlabels"][0] for r in pred["result"]]
    assert labels and labels[0].lower() == "cat", labels
    check_result(pred["result"][0], CAT_NO_GUESS)


def test_no_known_class_is_a_result_not_a_failure(client: Any) -> None:
    """A project none of whose labels the engine knows, and a CNN that sees nothing: an empty
    prediction with the reason in ``warnings``, no ``error`` (bulk counts it as predicted)."""
    config = """<View><Image name="image" value="$image"/>
      <BrushLabels name="mask" toName="image"><Label value="Widget"/><Label value="Gadget"/></BrushLabels></View>"""
    [pred] = predict(client, [{"id": 62, "data": {"image": f"/data/upload/1/{CAT_NO_GUESS}.jpg"}}], config=config)
    assert pred["mode"] == "guess" and pred["result"] == [] and "error" not in pred
    assert any("no class reached" in w for w in pred["warnings"]), pred


class FakeApi:
    secrets: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.posted: list[Any] = []

    def post_prediction(self, task: int, result: list[Any], score: float | None, model_version: str) -> dict[str, Any]:
        self.posted.append((task, result))
        return {"id": 1}


class FakeModel:
    secrets: tuple[str, ...] = ()

    def __init__(self, pred: dict[str, Any]) -> None:
        self.pred = pred

    def predict(self, *a: Any) -> list[dict[str, Any]]:
        return [self.pred]


@pytest.mark.parametrize(
    "pred, status",
    [
        ({"result": [], "score": 0.0, "model_version": "v", "mode": "guess", "warnings": ["no class reached p 0.2"]}, "done"),
        ({"score": 0.0, "model_version": "v", "error": "image not found"}, "failed"),
    ],
)
def test_bulk_counts_no_class_as_predicted(pred: dict[str, Any], status: str) -> None:
    api = FakeApi()
    out = predict_and_post(FakeModel(pred), api, 1, LABEL_CONFIG, {"id": 5})  # type: ignore[arg-type]
    assert out.status == status and bool(api.posted) == (status == "done")


def test_failed_task_is_not_a_prediction_and_reaches_metrics(client: Any) -> None:
    tasks = [
        {"id": 71, "data": {"image": "/data/upload/1/no_such_image.jpg"}},
        {"id": 72, "data": {"image": "/data/upload/text"}},
    ]
    out = predict(client, tasks)
    # LS 1.23 ml/models.py skips a response without 'result': nothing stored, retried next time
    assert all("result" not in p and p["error"] for p in out), out
    failures = client.get("/metrics").get_json()["recent_failures"]
    assert [(f["task"], f["project"]) for f in failures[-2:]] == [(71, "7"), (72, "7")]
    assert "refused the image (HTTP 4xx)" in failures[-2]["error"] and "not a readable image" in failures[-1]["error"]


def test_recent_failures_are_bounded(client: Any) -> None:
    from backend.model import FAILURES_KEPT

    predict(client, [{"id": 1000 + i, "data": {"image": "/data/upload/1/no_such_image.jpg"}} for i in range(FAILURES_KEPT + 5)])
    failures = client.get("/metrics").get_json()["recent_failures"]
    assert len(failures) == FAILURES_KEPT and failures[-1]["task"] == 1000 + FAILURES_KEPT + 4


def test_box_without_engine_class_gets_an_agreement_score(client: Any) -> None:
    """'widget' has no engine class: naked GrabCut, scored by agreement with the CAM technique of
    the project class strongest in the box (before: always 0.00, even for a good mask)."""
    from tests.backend.conftest import image_size, instance_masks, mask_iou, rect, voc_boxes
    from tests.backend.test_predict import DOG, decode

    w, h = image_size(DOG)
    (_, box) = next(b for b in voc_boxes(DOG) if b[0] == "dog")
    [pred] = predict(
        client,
        [{"id": 63, "data": {"image": f"/data/upload/1/{DOG}.jpg"}, "predictions": [{"result": [rect("widget", box, w, h)]}]}],
    )
    [res] = pred["result"]
    iou = max(mask_iou(decode(res), g) for c, g in instance_masks(DOG) if c == "dog")
    assert iou > 0.7 and res["score"] > 0.5, (iou, res["score"])
