"""/predict in every mode, through the Flask test client, on real VOC JPEGs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle

from tests.backend.conftest import LABEL_CONFIG, image_size, instance_masks, mask_iou, rect, voc_boxes

DOG, CAT = "2007_000063", "2007_000528"  # dog + chair 500x375; cat 500x375


def decode(result: dict[str, Any]) -> np.ndarray:
    """Decode a brush result with the SDK's decoder; must be exactly the image's size."""
    w, h = result["original_width"], result["original_height"]
    flat = np.asarray(decode_rle(result["value"]["rle"]))
    assert flat.size == w * h * 4
    return flat.reshape(h, w, 4)[:, :, 3] > 0


def predict(
    client: Any, tasks: list[dict[str, Any]], context: dict[str, Any] | None = None, config: str = LABEL_CONFIG
) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"tasks": tasks, "project": "7.1700000000", "label_config": config}
    if context is not None:
        body["params"] = {"login": None, "password": None, "context": context}
    r = client.post("/predict", json=body)
    assert r.status_code == 200, r.get_data(as_text=True)
    out = r.get_json()["results"]
    assert len(out) == len(tasks)
    return out


def check_result(res: dict[str, Any], stem: str) -> np.ndarray:
    w, h = image_size(stem)
    assert res["type"] == "brushlabels"
    assert res["from_name"] == "mask" and res["to_name"] == "image"
    assert (res["original_width"], res["original_height"], res["image_rotation"]) == (w, h, 0)
    assert res["value"]["format"] == "rle" and len(res["value"]["brushlabels"]) == 1
    assert isinstance(res["id"], str) and res["id"]
    assert 0.0 <= res["score"] <= 1.0
    m = decode(res)
    assert m.shape == (h, w) and m.any()
    return m


def best_iou(mask: np.ndarray, stem: str, cls: str) -> float:
    return max(mask_iou(mask, g) for c, g in instance_masks(stem) if c == cls)


def test_boxes_from_task_predictions(client: Any) -> None:
    w, h = image_size(DOG)
    boxes = [rect(n, b, w, h, f"r{i}") for i, (n, b) in enumerate(voc_boxes(DOG))]
    [pred] = predict(client, [{"id": 11, "data": {"image": f"/data/upload/1/{DOG}.jpg"}, "predictions": [{"result": boxes}]}])
    assert pred["mode"] == "boxes" and "error" not in pred
    assert [r["value"]["brushlabels"] for r in pred["result"]] == [["dog"], ["chair"]]
    dog = check_result(pred["result"][0], DOG)
    assert best_iou(dog, DOG, "dog") > 0.8  # measured 0.90
    assert pred["score"] == pytest.approx(np.mean([r["score"] for r in pred["result"]]), abs=1e-6)
    from backend.config import read_setting

    served = read_setting("CAMCUT_CONFIG", {})
    assert pred["model_version"].startswith(f"camcut-{served}-")  # the backend serves CAMCUT_CONFIG's default
    # the mask stays inside its box
    x0, y0, x1, y1 = voc_boxes(DOG)[0][1]
    outside = dog.copy()
    outside[int(y0) : int(y1), int(x0) : int(x1)] = False
    assert not outside.any()


def test_boxes_prefer_annotation_and_label_synonym(client: Any) -> None:
    w, h = image_size(CAT)
    ((_, box),) = voc_boxes(CAT)
    task = {
        "id": 12,
        "data": {"image": f"/data/upload/1/{CAT}.jpg"},
        "annotations": [{"id": 1, "result": [rect("Cat", box, w, h)], "was_cancelled": False, "updated_at": "2025-01-01"}],
        "predictions": [{"result": [rect("dog", (0, 0, 50, 50), w, h)]}],
    }
    [pred] = predict(client, [task])
    [res] = pred["result"]
    assert res["value"]["brushlabels"] == ["Cat"] and res["meta"]["voc_class"] == "cat"
    assert best_iou(check_result(res, CAT), CAT, "cat") > 0.45  # measured 0.58


def test_boxes_read_from_label_studio_api_when_not_sent(client: Any, ls_server: Any) -> None:
    w, h = image_size(CAT)
    ((_, box),) = voc_boxes(CAT)
    ls_server.tasks[13] = {
        "id": 13,
        "data": {"image": f"/data/upload/1/{CAT}.jpg"},
        "annotations": [],
        "predictions": [{"result": [rect("Cat", box, w, h)]}],
    }
    [pred] = predict(client, [{"id": 13, "data": {"image": f"/data/upload/1/{CAT}.jpg"}}])
    assert pred["mode"] == "boxes" and len(pred["result"]) == 1
    assert any(p.startswith("/api/tasks/13") for p, _ in ls_server.requests)


def test_unknown_label_gets_naked_grabcut_and_is_reported(client: Any) -> None:
    w, h = image_size(DOG)
    box = voc_boxes(DOG)[0][1]
    [pred] = predict(
        client,
        [{"id": 14, "data": {"image": f"/data/upload/1/{DOG}.jpg"}, "predictions": [{"result": [rect("widget", box, w, h)]}]}],
    )
    [res] = pred["result"]
    assert res["value"]["brushlabels"] == ["widget"] and res["meta"]["technique"] == "grabcut"
    assert any("widget" in wmsg and "no engine class" in wmsg for wmsg in pred["warnings"])
    check_result(res, DOG)


def test_tags_from_choices(client: Any) -> None:
    task = {
        "id": 15,
        "data": {"image": f"/data/upload/1/{CAT}.jpg"},
        "annotations": [
            {
                "id": 2,
                "result": [{"from_name": "tags", "to_name": "image", "type": "choices", "value": {"choices": ["Cat", "widget"]}}],
            }
        ],
    }
    [pred] = predict(client, [task])
    assert pred["mode"] == "tags"
    [res] = pred["result"]
    assert res["value"]["brushlabels"] == ["Cat"] and res["meta"]["technique"] == "PF PB 0.3"
    assert best_iou(check_result(res, CAT), CAT, "cat") > 0.3
    assert any("widget" in wmsg for wmsg in pred["warnings"])  # reported, not silently dropped


@pytest.mark.parametrize("field, value", [("tags", "cat, dog"), ("classes", ["kitty"])])
def test_tags_from_data_field(client: Any, field: str, value: Any) -> None:
    [pred] = predict(client, [{"id": 16, "data": {"image": f"/data/upload/1/{CAT}.jpg", field: value}}])
    assert pred["mode"] == "tags"
    labels = [r["value"]["brushlabels"][0] for r in pred["result"]]
    assert "Cat" in labels
    for r in pred["result"]:
        check_result(r, CAT)


def test_nothing_given_uses_predicted_classes(client: Any, camnet: Any) -> None:
    from model import Segmenter, decode_image
    from model.engine import get_config
    from tests.backend.conftest import jpeg

    config = LABEL_CONFIG.replace(
        '<Label value="widget"/></BrushLabels>', '<Label value="widget"/><Label value="bird"/></BrushLabels>'
    )
    [pred] = predict(client, [{"id": 17, "data": {"image": f"/data/upload/1/{CAT}.jpg"}}], config=config)
    assert pred["mode"] == "guess"
    from backend.config import read_setting

    seg = Segmenter(get_config(read_setting("CAMCUT_CONFIG", {})), net=camnet)  # the served configuration
    seg.set_image(decode_image(jpeg(CAT)))
    expected = {g.voc_class for g in seg.predict_classes(0.2, 3)} & {"dog", "cat", "person", "chair", "bird"}
    got = {r["meta"]["voc_class"] for r in pred["result"]}
    assert got == expected and got  # whatever the CNN guesses and BrushLabels can name


def test_interactive_rectangle(client: Any) -> None:
    w, h = image_size(DOG)
    box = voc_boxes(DOG)[0][1]
    ctx = {"result": [{**rect("dog", box, w, h, "user1"), "origin": "manual"}]}
    [pred] = predict(
        client, [{"id": 18, "data": {"image": f"/data/upload/1/{DOG}.jpg"}, "predictions": [], "annotations": []}], ctx
    )
    assert pred["mode"] == "interactive"
    [res] = pred["result"]
    assert best_iou(check_result(res, DOG), DOG, "dog") > 0.8


def keypoint(x: float, y: float, w: int, h: int, positive: bool, label: str = "Cat") -> dict[str, Any]:
    return {
        "id": f"k{x:.0f}{y:.0f}",
        "type": "keypointlabels",
        "from_name": "kp",
        "to_name": "image",
        "is_positive": positive,
        "original_width": w,
        "original_height": h,
        "image_rotation": 0,
        "value": {"x": 100 * x / w, "y": 100 * y / h, "width": 0.5, "keypointlabels": [label]},
    }


def test_interactive_keypoints_positive_and_negative(client: Any) -> None:
    w, h = image_size(CAT)
    ((_, gt),) = instance_masks(CAT)
    ys, xs = np.nonzero(gt)
    inside = (float(np.median(xs)), float(np.median(ys)))
    task = {"id": 19, "data": {"image": f"/data/upload/1/{CAT}.jpg"}}
    [pos] = predict(client, [task], {"result": [keypoint(*inside, w, h, True)]})
    [res] = pos["result"]
    m = check_result(res, CAT)
    assert res["value"]["brushlabels"] == ["Cat"] and m[int(inside[1]), int(inside[0])]
    # a negative click where the positive-only mask was foreground removes that spot
    fg_y, fg_x = np.nonzero(m & ~gt) if (m & ~gt).any() else np.nonzero(m)
    far = max(range(len(fg_x)), key=lambda i: (fg_x[i] - inside[0]) ** 2 + (fg_y[i] - inside[1]) ** 2)
    neg_pt = (float(fg_x[far]), float(fg_y[far]))
    [both] = predict(client, [task], {"result": [keypoint(*inside, w, h, True), keypoint(*neg_pt, w, h, False)]})
    m2 = decode(both["result"][0])
    assert m2[int(inside[1]), int(inside[0])] and not m2[int(neg_pt[1]), int(neg_pt[0])]
    # a negative click alone (Alt-click, issue 13 item 5): the clicked part is cut out of the
    # newest mask of the task that contains it (here the positive-only mask m), nothing added
    [neg] = predict(client, [task], {"result": [keypoint(*neg_pt, w, h, False)]})
    assert "error" not in neg, neg
    [res3] = neg["result"]
    m3 = check_result(res3, CAT)
    assert res3["value"]["brushlabels"] == ["Cat"] and not (m3 & ~m).any()
    assert not m3[int(neg_pt[1]), int(neg_pt[0])] and m3[int(inside[1]), int(inside[0])]
    # on a task camcut never predicted there is nothing to cut from: the answer says so
    [none] = predict(client, [{**task, "id": 190}], {"result": [keypoint(*neg_pt, w, h, False)]})
    assert none["result"] == [] and "positive click" in none["error"]


def test_interactive_brush_strokes(client: Any) -> None:
    from backend.results import mask_to_rle

    w, h = image_size(DOG)
    gt = next(g for c, g in instance_masks(DOG) if c == "dog")
    stroke = np.zeros_like(gt)
    ys, xs = np.nonzero(gt)
    cy, cx = int(np.median(ys)), int(np.median(xs))
    stroke[cy - 6 : cy + 6, cx - 30 : cx + 30] = True
    stroke &= gt
    ctx = {
        "result": [
            {
                "id": "b1",
                "type": "brushlabels",
                "from_name": "mask",
                "to_name": "image",
                "original_width": w,
                "original_height": h,
                "image_rotation": 0,
                "value": {"format": "rle", "rle": mask_to_rle(stroke), "brushlabels": ["dog"]},
            }
        ]
    }
    [pred] = predict(client, [{"id": 20, "data": {"image": f"/data/upload/1/{DOG}.jpg"}}], ctx)
    [res] = pred["result"]
    m = check_result(res, DOG)
    assert res["value"]["brushlabels"] == ["dog"]
    assert (m & stroke).sum() == stroke.sum()  # the stroke is hard foreground
    assert mask_iou(m, gt) > 0.3


def test_batch_with_one_bad_task(client: Any) -> None:
    w, h = image_size(CAT)
    ((_, box),) = voc_boxes(CAT)
    good = {"data": {"image": f"/data/upload/1/{CAT}.jpg"}, "predictions": [{"result": [rect("Cat", box, w, h)]}]}
    tasks = [{"id": 21, **good}, {"id": 22, "data": {"image": "/data/upload/1/no_such_image.jpg"}}, {"id": 23, **good}]
    out = predict(client, tasks)
    assert "result" not in out[1] and "Label Studio refused the image (HTTP 4xx)" in out[1]["error"]
    for i in (0, 2):
        assert len(out[i]["result"]) == 1 and "error" not in out[i]


@pytest.mark.parametrize(
    "data, message",
    [
        ({}, "no 'image' field"),
        ({"image": 42}, "must be a URL string"),
        ({"image": "/data/upload/text"}, "not a readable image"),
        ({"image": "/data/upload/big"}, "over the limit"),
        ({"image": "file:///etc/passwd"}, "refused URL scheme"),
        ({"image": "/data/local-files/?d=../../etc/passwd"}, "path traversal"),
    ],
)
def test_bad_tasks_get_a_clear_error(app_factory: Any, data: dict[str, Any], message: str) -> None:
    client = app_factory(CAMCUT_MAX_DOWNLOAD_BYTES="200000").test_client()
    [pred] = predict(client, [{"id": 30, "data": data}])
    assert "result" not in pred and message in pred["error"], pred["error"]


def test_huge_image_refused_by_pixel_count(app_factory: Any) -> None:
    client = app_factory(CAMCUT_MAX_PIXELS="100000").test_client()
    [pred] = predict(client, [{"id": 31, "data": {"image": f"/data/upload/1/{CAT}.jpg"}}])
    assert "result" not in pred and "over the limit of 100000" in pred["error"]


def test_bad_boxes(client: Any) -> None:
    w, h = image_size(CAT)
    ((_, box),) = voc_boxes(CAT)
    results = [
        rect("Cat", (w + 10, 10, w + 50, 50), w, h, "out"),
        rect("Cat", (10, 10, 10, 60), w, h, "zero"),
        rect("Cat", box, w, h, "ok"),
    ]
    [pred] = predict(client, [{"id": 32, "data": {"image": f"/data/upload/1/{CAT}.jpg"}, "predictions": [{"result": results}]}])
    assert len(pred["result"]) == 1  # the good box still gets its mask
    assert sum("no area inside" in wmsg for wmsg in pred["warnings"]) == 2
    [only_bad] = predict(
        client, [{"id": 33, "data": {"image": f"/data/upload/1/{CAT}.jpg"}, "predictions": [{"result": results[:1]}]}]
    )
    assert "result" not in only_bad and "no area inside" in only_bad["error"]


def test_second_prompt_on_the_same_image_reuses_image_and_cnn(client: Any, monkeypatch: Any) -> None:
    """Interactive prompts on one task: the image is fetched and the CNN run once (SamPredictor-style).

    Counted are both ways the engine runs the network: CamNet.run (the GrabCut presets) and
    model.features.forward_features (featcut's pass that gives the CAM and the hypercolumns)."""
    from backend.model import CamCutModel
    from model import features
    from model.engine import CamNet

    model: CamCutModel = client.application.config["CAMCUT_MODEL"]
    calls = {"load": 0, "cnn": 0}
    real_load, real_run = model.load_image, CamNet.run

    def counting_load(*a: Any, **k: Any) -> Any:
        calls["load"] += 1
        return real_load(*a, **k)

    def counting_run(self: Any, *a: Any, **k: Any) -> Any:
        calls["cnn"] += 1
        return real_run(self, *a, **k)

    real_forward = features.forward_features

    def counting_forward(*a: Any, **k: Any) -> Any:
        calls["cnn"] += 1
        return real_forward(*a, **k)

    monkeypatch.setattr(model, "load_image", counting_load)
    monkeypatch.setattr(CamNet, "run", counting_run)
    monkeypatch.setattr(features, "forward_features", counting_forward)
    w, h = image_size(DOG)
    task = {"id": 4242, "data": {"image": f"/data/upload/1/{DOG}.jpg"}}
    first = second = None
    for k, box in enumerate(((123, 115, 379, 275), (130, 120, 370, 270))):
        ctx = {"result": [rect("Dog", box, w, h, f"r{k}")]}
        r = client.post(
            "/predict", json={"tasks": [task], "project": "1.1", "label_config": LABEL_CONFIG, "params": {"context": ctx}}
        )
        [pred] = r.get_json()["results"]
        assert pred["mode"] == "interactive" and len(pred["result"]) == 1, pred
        first, second = (pred, second) if k == 0 else (first, pred)
    assert calls == {"load": 1, "cnn": 1}
    assert first["result"][0]["value"]["rle"] != second["result"][0]["value"]["rle"]  # two prompts, two masks


def test_server_timing_splits_compute_and_download(client: Any) -> None:
    """The benchmark's HTTP overhead rests on this header: predict covers the download."""
    from bench.httpbench import parse_server_timing

    w, h = image_size(DOG)
    body = {
        "tasks": [
            {
                "id": 12,
                "data": {"image": f"/data/upload/1/{DOG}.jpg"},
                "predictions": [{"result": [rect(n, b, w, h, f"r{i}") for i, (n, b) in enumerate(voc_boxes(DOG))]}],
            }
        ],
        "project": "7.1700000000",
        "label_config": LABEL_CONFIG,
    }
    r = client.post("/predict", json=body)
    assert r.status_code == 200
    t = parse_server_timing(r.headers["Server-Timing"])
    assert set(t) == {"predict", "download"}
    assert 0 < t["download"] < t["predict"]  # the image came from the fake Label Studio, then 2 masks were made


def test_clicks_on_a_box_refine_the_mask_answered_for_that_box(client: Any, camnet: Any) -> None:
    """A box, then a click on the part it missed: the served cut (featcut) starts from the mask
    camcut answered for that box (the click loop the clicks task measures), not from scratch."""
    from scipy import ndimage

    from backend.config import read_setting
    from backend.prompts import LabeledBox, interactive_prompt
    from model import Box, Segmenter, decode_image
    from model.engine import get_config
    from tests.backend.conftest import jpeg

    w, h = image_size(DOG)
    box = voc_boxes(DOG)[0][1]
    gt = next(g for c, g in instance_masks(DOG) if c == "dog")
    task = {"id": 210, "data": {"image": f"/data/upload/1/{DOG}.jpg"}}
    drawn = {**rect("dog", box, w, h, "user1"), "origin": "manual"}
    [first] = predict(client, [task], {"result": [drawn]})
    m0 = check_result(first["result"][0], DOG)
    missed = gt & ~m0  # the click goes to the interior of the largest missed region
    labels, n = ndimage.label(missed)
    assert n, "the box mask already covers the dog"
    biggest = labels == 1 + int(np.argmax(ndimage.sum(missed, labels, range(1, n + 1))))
    y, x = np.unravel_index(int(np.argmax(ndimage.distance_transform_edt(biggest))), biggest.shape)
    context = {"result": [drawn, keypoint(float(x), float(y), w, h, True, "dog")]}
    [second] = predict(client, [task], context)
    m1 = check_result(second["result"][0], DOG)
    [fresh] = predict(client, [{**task, "id": 211}], context)  # the same prompt on a task with no answer yet

    config = get_config(read_setting("CAMCUT_CONFIG", {}))
    seg = Segmenter(config, net=camnet)
    seg.set_image(decode_image(jpeg(DOG)))
    assert seg.answers_from_previous
    prompt = interactive_prompt(context["result"], w, h, 10**9)
    pixel_box = LabeledBox("dog", prompt.boxes[0].box).to_pixels(w, h).box
    expected = seg.segment_box(Box(*pixel_box), "dog", config.box_technique, seeds=prompt.seeds, previous=m0)
    assert np.array_equal(m1, expected.mask)
    assert not np.array_equal(m1, decode(fresh["result"][0]))  # the previous mask changed the answer
    assert mask_iou(m1, gt) > mask_iou(m0, gt)


def test_keypoints_refine_the_mask_answered_for_the_earlier_keypoints(client: Any, camnet: Any) -> None:
    """A keypoint on the dog, then one where the simulator of ``evaluator.clicks`` puts the next
    click (the largest error region's interior: here the first answer's false part, so a negative
    keypoint): the served cut (featcut) starts from the mask camcut answered for the label's
    earlier keypoints, as boxes do."""
    from scipy import ndimage

    from backend.config import read_setting
    from backend.prompts import interactive_prompt
    from evaluator.clicks import next_click
    from model import Segmenter, decode_image
    from model.engine import get_config
    from tests.backend.conftest import jpeg

    w, h = image_size(DOG)
    gt = next(g for c, g in instance_masks(DOG) if c == "dog")
    ys, xs = np.nonzero(ndimage.distance_transform_edt(gt) == ndimage.distance_transform_edt(gt).max())
    first_pt = keypoint(float(xs[0]), float(ys[0]), w, h, True, "dog")
    task = {"id": 220, "data": {"image": f"/data/upload/1/{DOG}.jpg"}}
    [first] = predict(client, [task], {"result": [first_pt]})
    m0 = check_result(first["result"][0], DOG)
    click = next_click(m0, gt, np.ones_like(gt))
    assert click is not None, "one keypoint already covers the dog"
    x, y, positive = click
    context = {"result": [first_pt, keypoint(float(x), float(y), w, h, positive, "dog")]}
    [second] = predict(client, [task], context)
    m1 = check_result(second["result"][0], DOG)
    [fresh] = predict(client, [{**task, "id": 221}], context)  # the same clicks on a task with no answer yet

    seg = Segmenter(get_config(read_setting("CAMCUT_CONFIG", {})), net=camnet)
    seg.set_image(decode_image(jpeg(DOG)))
    assert seg.answers_from_previous
    prompt = interactive_prompt(context["result"], w, h, 10**9)
    assert np.array_equal(m1, seg.segment_seeds(prompt.seeds, "dog", previous=m0).mask)
    assert not np.array_equal(m1, decode(fresh["result"][0]))  # the previous mask changed the answer
    assert mask_iou(m1, gt) > mask_iou(m0, gt)
