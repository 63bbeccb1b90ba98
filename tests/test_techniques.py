"""The digitizer (CAM -> 4-valued GrabCut mask) and the named techniques (model/techniques.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from model.techniques import DELTA, Technique, ThresholdError, Thresholds, digitize

BGD, PR_BGD, PR_FGD, FGD = cv2.GC_BGD, cv2.GC_PR_BGD, cv2.GC_PR_FGD, cv2.GC_FGD
# class rank in increasing "foregroundness"
RANK = {BGD: 0, PR_BGD: 1, PR_FGD: 2, FGD: 3}


def test_gc_constants_are_opencvs():
    assert (BGD, FGD, PR_BGD, PR_FGD) == (0, 1, 2, 3)


@pytest.mark.parametrize(
    "th, p, expected",
    [
        # (t0, t1, t2) = (0.2, 0.5, 0.8): every interval and every boundary value
        (
            (0.2, 0.5, 0.8),
            [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0],
            [BGD, BGD, PR_BGD, PR_BGD, PR_FGD, PR_FGD, FGD, FGD, FGD],
        ),
        # t0 == 0: nothing is definite background, p == 0 is probable background
        ((0.0, 0.3, 0.6), [0.0, 0.29, 0.3, 0.59, 0.6, 1.0], [PR_BGD, PR_BGD, PR_FGD, PR_FGD, FGD, FGD]),
        # t2 == 1: no definite foreground, even at p == 1 (PF PB)
        ((0.0, 0.4, 1.0), [0.0, 0.39, 0.4, 0.99, 1.0], [PR_BGD, PR_BGD, PR_FGD, PR_FGD, PR_FGD]),
        # F PF with t = 0.6: (0, 0.01, 0.6)
        ((0.0, 0.01, 0.6), [0.0, 0.005, 0.01, 0.59, 0.6, 1.0], [PR_BGD, PR_BGD, PR_FGD, PR_FGD, FGD, FGD]),
        # t2 just below 1: p == 1 is definite foreground, p just below is not
        ((0.1, 0.5, 0.99), [0.0, 0.1, 0.5, 0.98, 0.99, 1.0], [BGD, PR_BGD, PR_FGD, PR_FGD, FGD, FGD]),
        # t0 == 0.5 > 0: 0 is definite bg
        ((0.5, 0.75, 0.875), [0.0, 0.4999, 0.5, 0.75, 0.875, 1.0], [BGD, BGD, PR_BGD, PR_FGD, FGD, FGD]),
    ],
)
def test_digitize_hand_made(th, p, expected):
    p = np.array(p, np.float32)
    out = digitize(p, Thresholds(*th))
    assert out.dtype == np.uint8 and out.shape == p.shape
    assert out.tolist() == expected


def test_digitize_keeps_2d_shape_and_values():
    cam = np.array([[0.0, 0.25], [0.6, 1.0]], np.float32)
    out = digitize(cam, Thresholds(0.1, 0.5, 0.9))
    assert out.tolist() == [[BGD, PR_BGD], [PR_FGD, FGD]]


def test_t2_one_gives_no_definite_foreground():
    cam = np.linspace(0, 1, 1001, dtype=np.float32).reshape(7, 143)
    out = digitize(cam, Thresholds(0.0, 0.3, 1.0))
    assert not np.any(out == FGD)
    assert not np.any(out == BGD)
    assert set(np.unique(out).tolist()) == {PR_BGD, PR_FGD}
    assert np.array_equal(out == PR_FGD, cam >= np.float32(0.3))


@pytest.mark.parametrize(
    "th",
    [
        (-0.1, 0.5, 0.8),  # t0 < 0
        (0.0, 0.5, 1.01),  # t2 > 1
        (0.5, 0.5, 0.8),  # t0 == t1
        (0.2, 0.6, 0.6),  # t1 == t2
        (0.6, 0.4, 0.8),  # decreasing
        (0.1, 0.9, 0.5),
        (float("nan"), 0.5, 0.8),
        (0.0, float("nan"), 0.8),
        (0.0, 0.5, float("nan")),
        (0.0, 0.5, float("inf")),
        (0.0, "0.5", 0.8),  # not a number
        (0.0, None, 0.8),
    ],
)
def test_invalid_thresholds_raise(th):
    with pytest.raises(ThresholdError):
        Thresholds(*th)


def test_threshold_error_is_a_value_error_with_message():
    with pytest.raises(ValueError, match="t0 < t1 < t2"):
        Thresholds(0.3, 0.2, 0.9)


@pytest.mark.parametrize("t", [0.1, 0.3, 0.5, 0.6, 0.9])
def test_named_variant_thresholds(t):
    assert Technique("pfpb", t).thresholds == Thresholds(0.0, t, 1.0)
    assert Technique("fpf", t).thresholds == Thresholds(0.0, DELTA, t)
    assert Technique("fpb", t).thresholds == Thresholds(0.0, t, t + DELTA)
    assert Technique("cam", t).thresholds == Thresholds(0.0, t, 1.0)
    assert DELTA == 0.01
    assert Technique("pfpb", t).kind == Technique("fpf", t).kind == Technique("fpb", t).kind == "gccam"
    assert Technique("cam", t).kind == "cam"


def test_grabcut_technique():
    g = Technique("grabcut")
    assert g.kind == "grabcut" and g.thresholds is None and g.label == "grabcut"
    with pytest.raises(ThresholdError):
        Technique("grabcut", 0.5)


@pytest.mark.parametrize("variant", ["cam", "pfpb", "fpf", "fpb"])
def test_cam_variants_need_threshold(variant):
    with pytest.raises(ThresholdError, match="needs a threshold"):
        Technique(variant)


@pytest.mark.parametrize(
    "variant, t",
    [
        ("fpf", 0.0),
        ("fpf", 0.01),
        ("fpb", 0.995),
        ("fpb", 1.0),
        ("pfpb", 1.0),
        ("pfpb", 0.0),
        ("cam", -0.2),
        ("fpf", float("nan")),
    ],
)
def test_variant_thresholds_out_of_range_raise(variant, t):
    # e.g. F PF 0.01 would give (0, 0.01, 0.01): t1 == t2
    with pytest.raises(ThresholdError):
        Technique(variant, t)


def test_variant_edges_that_are_valid():
    assert Technique("fpf", 0.02).thresholds == Thresholds(0.0, 0.01, 0.02)
    assert Technique("fpb", 0.99).thresholds.t2 == pytest.approx(1.0)
    assert Technique("pfpb", 0.999).thresholds == Thresholds(0.0, 0.999, 1.0)


LABELS = ["grabcut", "cam 0.3", "PF PB 0.3", "F PF 0.6", "F PB 0.2", "F PB 0.15", "PF PB 0.05"]


@pytest.mark.parametrize("label", LABELS)
def test_parse_round_trips_labels(label):
    tech = Technique.parse(label)
    assert tech.label == label
    assert Technique.parse(tech.label) == tech


@pytest.mark.parametrize(
    "text, expected",
    [
        ("grabcut", Technique("grabcut")),
        ("  GrabCut ", Technique("grabcut")),
        ("cam 0.3", Technique("cam", 0.3)),
        ("fpf:0.6", Technique("fpf", 0.6)),
        ("F PF 0.6", Technique("fpf", 0.6)),
        ("pfpb-0.3", Technique("pfpb", 0.3)),
        ("pf_pb 0.3", Technique("pfpb", 0.3)),
        ("FPB 0.2", Technique("fpb", 0.2)),
    ],
)
def test_parse_spellings(text, expected):
    assert Technique.parse(text) == expected


@pytest.mark.parametrize("text", ["", "snake", "fp 0.3", "grab cut cam", "sam 0.5", "cam cam 0.3", "0.3"])
def test_unknown_names_raise(text):
    with pytest.raises(ThresholdError, match="unknown technique"):
        Technique.parse(text)


@pytest.mark.parametrize("name", ["snake", "PF PB", "GrabCut", ""])
def test_unknown_variant_in_constructor_raises(name):
    with pytest.raises(ThresholdError, match="unknown technique"):
        Technique(name, 0.5)


def test_parse_validates_threshold():
    with pytest.raises(ThresholdError):
        Technique.parse("fpb 1.0")
    with pytest.raises(ThresholdError):
        Technique.parse("cam")  # needs a threshold


# -- property: the digitized classes are monotone in p ------------------------------------------
@st.composite
def valid_thresholds(draw):
    vals = sorted(draw(st.lists(st.floats(0.0, 1.0, allow_nan=False, width=32), min_size=3, max_size=3, unique=True)))
    return Thresholds(*(float(v) for v in vals))


cams = arrays(
    np.float32,
    st.tuples(st.integers(1, 12), st.integers(1, 12)),
    elements=st.floats(0.0, 1.0, allow_nan=False, width=32),
)


@settings(max_examples=200, deadline=None)
@given(cam=cams, th=valid_thresholds())
def test_digitize_is_monotone_in_p(cam, th):
    out = digitize(cam, th)
    assert out.shape == cam.shape
    ranks = np.vectorize(RANK.__getitem__)(out)
    order = np.argsort(cam, axis=None, kind="stable")
    flat_p, flat_r = cam.ravel()[order], ranks.ravel()[order]
    # a larger p never gets a less foreground class
    strictly = np.diff(flat_p) > 0
    assert np.all(np.diff(flat_r)[strictly] >= 0)
    # equal p -> equal class
    same = np.diff(flat_p) == 0
    assert np.all(np.diff(flat_r)[same] == 0)
    # and each class matches its interval
    p = cam
    assert np.array_equal(out == BGD, p < np.float32(th.t0))
    if th.t2 < 1.0:
        assert np.array_equal(out == FGD, p >= np.float32(th.t2))
    else:
        assert not np.any(out == FGD)
