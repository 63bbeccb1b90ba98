"""Overlapping boxes of one task (issue 13 item 4): no pixel in two masks, no mask keeps its box
edge inside another box's object, and every mask is its lone-box mask minus what others won."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.backend.conftest import image_size, rect, voc_boxes
from tests.backend.test_predict import decode, predict

SHEEP, BOATS = "2007_004423", "2007_009527"  # three overlapping sheep; three overlapping boats


def border(shape: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    m[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1] = False
    return m


def interior(shape: tuple[int, int], box: tuple[float, float, float, float], inset: int = 2) -> np.ndarray:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    m = np.zeros(shape, bool)
    m[y0 + inset : y1 - inset, x0 + inset : x1 - inset] = True
    return m


@pytest.mark.parametrize("stem", [SHEEP, BOATS])
def test_overlapping_boxes_share_no_pixel(client: Any, stem: str) -> None:
    w, h = image_size(stem)
    boxes = voc_boxes(stem)
    data = {"image": f"/data/upload/1/{stem}.jpg"}
    together = predict(
        client,
        [{"id": 31, "data": data, "predictions": [{"result": [rect(n, b, w, h, f"r{i}") for i, (n, b) in enumerate(boxes)]}]}],
    )[0]
    alone = predict(
        client,
        [{"id": 40 + i, "data": data, "predictions": [{"result": [rect(n, b, w, h, "r")]}]} for i, (n, b) in enumerate(boxes)],
    )
    masks = [decode(r) for r in together["result"]]
    lone = [decode(p["result"][0]) for p in alone]
    assert len(masks) == len(boxes) == 3
    contested = sum(lone).astype(int) > 1
    assert contested.sum() > 500  # the case of the issue: the lone masks do overlap
    for i, (m, lm, (_, box)) in enumerate(zip(masks, lone, boxes, strict=True)):
        assert not (m & ~lm).any()  # only lost pixels, never gained
        assert (m == lm)[~contested].all()  # uncontested pixels unchanged
        for j, (om, (_, obox)) in enumerate(zip(lone, boxes, strict=True)):
            if i == j:
                continue
            assert not (m & masks[j]).any()
            # the straight edge: mask i on its own box edge, inside box j, where j's mask is
            assert not (m & border(m.shape, box) & interior(m.shape, obox) & om).any()
    assert ((sum(masks) > 0) == (sum(lone) > 0)).all()  # nothing lost overall
