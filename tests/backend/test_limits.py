"""Issue 11 item 2: what one request may make a worker allocate, and issue 17: an empty tag mask
is an answer. Through the Flask test client on real VOC JPEGs (fake LS of conftest)."""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle, encode_rle, mask2rle

from backend import rle
from backend.errors import TaskError
from tests.backend.conftest import LABEL_CONFIG, image_size, rect, voc_boxes

DOG, CAT = "2007_000063", "2007_000528"
MiB = 1 << 20


def post(client: Any, tasks: list[dict[str, Any]], context: dict[str, Any] | None = None, config: str = LABEL_CONFIG) -> Any:
    body: dict[str, Any] = {"tasks": tasks, "project": "3.1700000000", "label_config": config}
    if context is not None:
        body["params"] = {"context": context}
    return client.post("/predict", json=body)


# -- the RLE codec --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (64, 48), (375, 500)])
@pytest.mark.parametrize("p", [0.0, 0.02, 0.5, 1.0])
def test_rle_is_the_sdk_format(shape: tuple[int, int], p: float) -> None:
    m = np.random.default_rng(int(p * 100) + shape[0]).random(shape) < p
    sdk = [int(v) for v in mask2rle(m.astype(np.uint8) * 255)]
    assert rle.encode(m) == sdk
    assert (rle.decode(sdk, *shape) == m).all()


def test_rle_decodes_literal_records_like_the_sdk() -> None:
    """LS's front end may write per-value literals (alpha differing from RGB)."""
    vals = np.random.default_rng(1).integers(0, 3, 4 * 40 * 30).astype(np.uint8) * 100
    stream = encode_rle(vals)
    ref = np.asarray(decode_rle(stream)).reshape(30, 40, 4)[:, :, 3] > 0
    assert (rle.decode(stream, 30, 40) == ref).all()


def test_rle_refuses_bad_streams() -> None:
    good = rle.encode(np.ones((10, 10), bool))
    with pytest.raises(TaskError, match="declares 400 values, expected 20x10x4"):
        rle.decode(good, 10, 20)
    with pytest.raises(TaskError, match="ends before"):
        rle.decode(good[:8], 10, 10)
    with pytest.raises(TaskError, match="byte values"):
        rle.decode([*good[:4], [1], 3], 10, 10)  # type: ignore[list-item]  # the hostile input under test
    with pytest.raises(TaskError, match="over the limit of 50"):
        rle.decode(good, 10, 10, max_pixels=50)


# -- the brush bomb -------------------------------------------------------------------------------
def bomb(values: int) -> list[int]:
    """A stream that declares ``values`` values and fills them all with 255 in 64 Ki runs:
    ~3.4 bytes of request per 64 Ki bytes the SDK's decoder writes."""
    bits = f"{values:032b}{7:05b}" + "".join(f"{s - 1:04b}" for s in (3, 4, 8, 16))
    bits += (f"111{2**16 - 1:016b}" + "1" * 8) * (values // 2**16 + 1)
    bits += "0" * (-len(bits) % 8)
    return list(int(bits, 2).to_bytes(len(bits) // 8, "big"))


@pytest.mark.parametrize("side, match", [(11_200, "over the limit of 40000000"), (None, "header declares")])
def test_brush_bomb_is_refused_before_any_large_allocation(client: Any, side: int | None, match: str) -> None:
    """A ~30 KB stroke declaring 500 MB: on the SDK's decoder, that much memory is written; here
    it is a clear task error and the request's peak traced allocation stays under 64 MiB."""
    w, h = image_size(CAT)
    ow, oh = (side, side) if side else (w, h)
    stroke = bomb(500_000_000 if side is None else 4 * side * side)
    ctx = {
        "result": [
            {
                "id": "b1",
                "type": "brushlabels",
                "from_name": "mask",
                "to_name": "image",
                "original_width": ow,
                "original_height": oh,
                "value": {"format": "rle", "rle": stroke, "brushlabels": ["Cat"]},
            }
        ]
    }
    post(client, [{"id": 901, "data": {"image": f"/data/upload/1/{CAT}.jpg"}}], {"result": [rect("Cat", (10, 10, 90, 90), w, h)]})
    tracemalloc.start()
    try:
        r = post(client, [{"id": 901, "data": {"image": f"/data/upload/1/{CAT}.jpg"}}], ctx)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * MiB, f"peak traced allocation {peak / MiB:.0f} MiB"
    assert r.status_code == 200
    [pred] = r.get_json()["results"]
    assert pred["result"] == [] and match in pred["error"], pred


# -- two fuzzer findings: a clear per-task error, not an internal one ---------------------------------
def test_non_string_result_type_is_a_task_error(client: Any) -> None:
    task = {
        "id": 902,
        "data": {"image": f"/data/upload/1/{CAT}.jpg"},
        "annotations": [{"result": [{"id": "r", "from_name": "box", "type": 7, "value": {}}]}],
    }
    [pred] = post(client, [task]).get_json()["results"]
    assert "result" not in pred and "'type' must be a string, got int" in pred["error"], pred  # failed: nothing to store


def test_list_in_a_stroke_rle_is_a_task_error(client: Any) -> None:
    w, h = image_size(CAT)
    ctx = {
        "result": [
            {
                "type": "brushlabels",
                "original_width": w,
                "original_height": h,
                "value": {"rle": [0, 0, [1], 2, 3], "brushlabels": ["Cat"]},
            }
        ]
    }
    [pred] = post(client, [{"id": 903, "data": {"image": f"/data/upload/1/{CAT}.jpg"}}], ctx).get_json()["results"]
    assert pred["result"] == [] and "byte values" in pred["error"] and "internal" not in pred["error"], pred


# -- request limits ---------------------------------------------------------------------------------
def test_request_limits_answer_4xx(app_factory: Any) -> None:
    client = app_factory(CAMCUT_MAX_TASKS="2", CAMCUT_MAX_REQUEST_BYTES="20000", CAMCUT_MAX_CONFIG_BYTES="5000").test_client()
    data = {"image": f"/data/upload/1/{CAT}.jpg"}
    task: dict[str, Any] = {"id": 1, "data": data}
    r = post(client, [task] * 3)
    assert r.status_code == 413 and "CAMCUT_MAX_TASKS=2" in r.get_json()["error"]
    r = post(client, [{**task, "data": {**data, "pad": "x" * 30000}}])
    assert r.status_code == 413 and r.is_json
    big = LABEL_CONFIG.replace("</View>", f"<!-- {'x' * 6000} --></View>")
    r = client.post("/setup", json={"project": "3.1", "schema": big})
    assert r.status_code == 400 and "CAMCUT_MAX_CONFIG_BYTES=5000" in r.get_json()["error"]
    assert post(client, [task], config=big).status_code == 400


def test_too_many_boxes_is_a_task_error(app_factory: Any) -> None:
    client = app_factory(CAMCUT_MAX_BOXES="3").test_client()
    w, h = image_size(CAT)
    ((_, box),) = voc_boxes(CAT)
    boxes = [rect("Cat", box, w, h, rid=f"r{i}") for i in range(4)]
    ok, over = (
        {"id": 904 + i, "data": {"image": f"/data/upload/1/{CAT}.jpg"}, "annotations": [{"result": b}]}
        for i, b in enumerate((boxes[:3], boxes))
    )
    a, b = post(client, [ok, over]).get_json()["results"]
    assert len(a["result"]) == 3 and "error" not in a
    assert "result" not in b and "4 boxes, more than CAMCUT_MAX_BOXES=3" in b["error"]  # failed: nothing to store


def test_schema_cache_is_bounded_by_bytes() -> None:
    from backend import schema as sm

    for i in range(40):
        sm.parse_schema(LABEL_CONFIG.replace("</View>", f"<!-- {i} {'x' * 900_000} --></View>"))
    assert sum(n for _, n in sm._CACHE._items.values()) <= sm.CACHE_BYTES
    assert 0 < len(sm._CACHE) <= sm.CACHE_BYTES // 900_000


# -- issue 17: an empty tag mask is an answer --------------------------------------------------------
def test_empty_tag_mask_is_a_result_not_an_error(app_factory: Any) -> None:
    """'sheep' on the dog photo: the engine finds no sheep pixels (measured: an empty mask).

    Pinned to the ``default`` engine: the backend's handling of an empty mask is under test, and
    ``default``'s GrabCut gives 'sheep' alone no pixels here, while the served ``featcut`` gates it
    with propagated CAM shares that give it some (17,071 px, README "The feature cut"); beside 'dog' both
    give it none."""
    client = app_factory(CAMCUT_CONFIG="default").test_client()
    task = {"id": 910, "data": {"image": f"/data/upload/1/{DOG}.jpg", "tags": "dog,sheep"}}
    [pred] = post(client, [task]).get_json()["results"]
    assert "error" not in pred, pred
    assert [r["meta"]["voc_class"] for r in pred["result"]] == ["dog"]
    [empty] = pred["empty"]
    assert empty["voc_class"] == "sheep" and empty["reason"] and isinstance(empty["score"], float)
    [only] = post(client, [{"id": 911, "data": {"image": f"/data/upload/1/{DOG}.jpg", "tags": "sheep"}}]).get_json()["results"]
    assert only["result"] == [] and "error" not in only and only["empty"][0]["voc_class"] == "sheep"


def test_brush_bomb_in_a_webhook_annotation_is_refused(app_factory: Any, ls_server: Any) -> None:
    """The same bomb as a submitted annotation: Label Studio's record of it, which the correction
    loop reads back and decodes (the webhook body is only a notification)."""
    from tests.backend.test_webhook import PROJECT, TASK, annotation, event

    ls_server.projects[9] = PROJECT
    ls_server.tasks[101] = TASK
    client = app_factory(CAMCUT_WEBHOOK_SYNC="1").test_client()
    ann = annotation("b1", "2025-01-01T10:00:01Z", aid=777)
    brush = ann["result"][0]
    brush.update(original_width=11_200, original_height=11_200)
    brush["value"]["rle"] = bomb(4 * 11_200 * 11_200)
    ls_server.annotations[777] = ann
    ev = event(ann)
    tracemalloc.start()
    try:
        r = client.post("/webhook", json=ev)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * MiB, f"peak traced allocation {peak / MiB:.0f} MiB"
    # the webhook's contract (backend/corrections.py): the event is recorded, the correction not used, the reason given
    del ls_server.annotations[777]  # the fake LS is shared by the session
    body = r.get_json()
    assert r.status_code == 201 and body["status"] == "error" and "over the limit of 40000000" in body["error"], body
