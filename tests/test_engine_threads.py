"""Concurrent GrabCuts (Segmenter(threads=N)) give the very masks and scores of the serial path,
and a bad prompt in a batch fails alone. Real VOC image, real weights, real OpenCV GrabCut; the
served featcut cut (PyMaxflow, torch GMMs) on real VOC boxes too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluator.dataset import VocDataset
from model.cnn import CamNet
from model.config import get_config
from model.prompts import Box, BoxError, BoxPrompt
from model.segmenter import Segmenter

VOC_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "voc2012" / "VOC2012"
DOG = "2007_000063"  # dog + chair, 500 x 375


@pytest.fixture(scope="module")
def pair():  # type: ignore[no-untyped-def]
    net = CamNet()
    serial = Segmenter(get_config("default"), net=net, threads=1)
    threaded = Segmenter(get_config("default"), net=net, threads=2)
    s = VocDataset(VOC_ROOT).load(DOG)
    threaded.set_image(s.image, serial.set_image(s.image))
    return serial, threaded, s


def test_threaded_boxes_equal_serial_ones(pair) -> None:  # type: ignore[no-untyped-def]
    serial, threaded, s = pair
    prompts = [BoxPrompt(o.box, o.name) for o in s.objects]
    a = serial.segment_boxes(prompts, agreement=True)
    b = threaded.segment_boxes(prompts, agreement=True)
    assert len(a) == len(b) == len(s.objects) >= 2
    for x, y in zip(a, b, strict=False):
        assert not isinstance(x, Exception) and not isinstance(y, Exception)
        assert np.array_equal(x.mask, y.mask) and x.score == y.score and 0 < x.score <= 1
    # segment_box is the one-prompt case of the same path
    one = threaded.segment_box(s.objects[0].box, s.objects[0].name, agreement=True)
    assert np.array_equal(one.mask, a[0].mask) and one.score == a[0].score


def test_one_bad_box_does_not_sink_the_others(pair) -> None:  # type: ignore[no-untyped-def]
    _, threaded, s = pair
    h, w = s.image.shape[:2]
    good = BoxPrompt(s.objects[0].box, s.objects[0].name)
    out = threaded.segment_boxes(
        [BoxPrompt(Box(w + 10, 0, w + 50, 40), "dog"), good, BoxPrompt(good.box, "unicorn")], agreement=True
    )
    assert isinstance(out[0], BoxError)
    assert not isinstance(out[1], Exception) and out[1].mask.any()
    assert isinstance(out[2], ValueError) and "unicorn" in str(out[2])
    with pytest.raises(BoxError):
        threaded.segment_box(Box(w + 10, 0, w + 50, 40), "dog")


def test_threaded_class_mask_equals_serial(pair) -> None:  # type: ignore[no-untyped-def]
    serial, threaded, _ = pair
    a, b = serial.segment_class("dog", agreement=True), threaded.segment_class("dog", agreement=True)
    assert np.array_equal(a.mask, b.mask) and a.score == b.score and a.mask.any()


def test_threaded_classes_equal_serial_and_fail_alone(pair) -> None:  # type: ignore[no-untyped-def]
    serial, threaded, _ = pair
    prompts = [("dog", None), ("unicorn", None), ("chair", None)]
    a, b = serial.segment_classes(prompts, agreement=True), threaded.segment_classes(prompts, agreement=True)
    assert isinstance(a[1], ValueError) and isinstance(b[1], ValueError)
    for x, y in ((a[0], b[0]), (a[2], b[2])):
        assert not isinstance(x, Exception) and not isinstance(y, Exception)
        assert np.array_equal(x.mask, y.mask) and x.score == y.score


def test_threads_must_be_positive(pair) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="threads"):
        Segmenter(get_config("default"), net=pair[0].net, threads=0)


def test_featcut_threaded_boxes_equal_serial_and_fail_alone(pair) -> None:  # type: ignore[no-untyped-def]
    """The served configuration's cuts (featcut, its second opinions) in the pool: the serial masks
    and scores bit for bit, in prompt order, and a bad prompt fails alone (README "Speed", session 10:
    the pool gains little, PyMaxflow holds Python's lock, but it must not change an answer)."""
    net = pair[0].net
    serial = Segmenter(get_config("featcut"), net=net, threads=1)
    threaded = Segmenter(get_config("featcut"), net=net, threads=2)
    ds = VocDataset(VOC_ROOT)
    for image_id in (DOG, "2007_000032", "2007_000170"):  # 2 / 4 / 6 objects
        s = ds.load(image_id)
        threaded.set_image(s.image, serial.set_image(s.image))
        h, w = s.image.shape[:2]
        prompts = [BoxPrompt(o.box, o.name) for o in s.objects]
        bad = [BoxPrompt(Box(w + 10, 0, w + 50, 40), "dog"), BoxPrompt(prompts[0].box, "unicorn")]
        a = serial.segment_boxes(prompts, agreement=True)
        b = threaded.segment_boxes(prompts[:1] + bad + prompts[1:], agreement=True)
        assert isinstance(b[1], BoxError) and isinstance(b[2], ValueError)
        b = b[:1] + b[3:]
        assert len(a) == len(b) == len(s.objects) >= 2
        for x, y in zip(a, b, strict=True):
            assert not isinstance(x, Exception) and not isinstance(y, Exception)
            assert np.array_equal(x.mask, y.mask) and x.score == y.score and x.mask.any()
