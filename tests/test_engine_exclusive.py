"""Tags compete for pixels (EngineConfig.class_exclusive), on a real VOC image with two tags."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from evaluator.dataset import VocDataset
from model.cnn import CamNet
from model.config import get_config
from model.segmenter import Segmenter
from model.techniques import Technique

VOC_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "voc2012" / "VOC2012"
DOG = "2007_000063"  # dog + chair


@pytest.fixture(scope="module")
def segs():
    net = CamNet()
    on = Segmenter(dataclasses.replace(get_config("default"), class_exclusive=True), net=net)
    off = Segmenter(dataclasses.replace(get_config("default"), class_exclusive=False), net=net)
    s = VocDataset(VOC_ROOT).load(DOG)
    off.set_image(s.image, on.set_image(s.image))
    return on, off


def test_cam_mask_loses_the_pixels_another_tag_wins(segs) -> None:
    on, off = segs
    t = Technique("cam", 0.3)
    alone = off.segment_class("chair", t, others=["dog"]).mask  # exclusivity off: others ignored
    excl = on.segment_class("chair", t, others=["dog"]).mask
    wins = on.raw_class_cam("chair") >= on.raw_class_cam("dog")
    assert np.array_equal(excl, alone & wins)
    assert excl.sum() < alone.sum()  # the dog's CAM does take some of the chair's pixels here
    assert np.array_equal(on.segment_class("chair", t).mask, alone)  # no other tag: nothing changes


def test_batch_of_tags_competes_like_explicit_others(segs) -> None:
    on, _ = segs
    dog, chair = on.segment_classes([("dog", None), ("chair", None)])
    assert not isinstance(dog, Exception) and not isinstance(chair, Exception)
    assert np.array_equal(dog.mask, on.segment_class("dog", others=["chair"]).mask)
    assert np.array_equal(chair.mask, on.segment_class("chair", others=["dog", "unicorn"]).mask)  # unknown rivals are ignored


def test_tag_window_keeps_the_mask_near_the_cam(segs) -> None:
    """class_window_margin: nothing outside the CAM foreground's box grown by the margin."""
    on, _ = segs
    t = Technique("pfpb", 0.3)
    m = on.segment_class("dog", t).mask
    fg = on.segment_class("dog", Technique("cam", 0.3)).mask
    ys, xs = np.nonzero(fg)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    mx, my = max(8, round(0.25 * (x1 - x0))), max(8, round(0.25 * (y1 - y0)))
    outside = np.ones_like(m)
    outside[max(0, y0 - my):y1 + my, max(0, x0 - mx):x1 + mx] = False
    assert m.any() and not (m & outside).any()
    whole = Segmenter(dataclasses.replace(on.config, class_window_margin=None), net=on.net)
    whole.set_image(on.image, on.cnn)
    assert (whole.segment_class("dog", t).mask & outside).any()  # without the window GrabCut does reach out there


def test_correction_scoring_uses_the_other_tags(segs) -> None:
    """The correction loop re-runs a tag prompt as it was served: with the image's other tags."""
    from model import adapt

    on, _ = segs
    t = Technique("cam", 0.3)
    corrected = on.segment_class("chair", t, others=["dog"]).mask
    assert adapt.score_candidates(on, adapt.Prompt("chair", others=("dog",)), corrected, [t])[t] == 1.0
    assert adapt.score_candidates(on, adapt.Prompt("chair"), corrected, [t])[t] < 1.0
