"""model/overlaps.py: contested pixels of overlapping box masks go to one box (issue 13 item 4)."""

from __future__ import annotations

import numpy as np
import pytest

from model.overlaps import box_evidence, centrality, resolve_overlaps


def box_mask(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[box[1] : box[3], box[0] : box[2]] = True
    return m


def test_centrality_is_one_in_the_middle_and_zero_on_the_edge() -> None:
    c = centrality((10, 20), (0, 0, 20, 10))
    assert c[5, 10] > 0.85 and c[0, :].max() < 0.25 and c[:, 0].max() < 0.15
    assert centrality((10, 30), (0, 0, 10, 10))[:, 15:].max() == 0.0  # outside the box


def test_two_filled_boxes_split_without_the_box_edge_inside_the_other() -> None:
    shape = (60, 100)
    a, b = (0, 0, 60, 60), (40, 0, 100, 60)
    masks = [box_mask(shape, a), box_mask(shape, b)]
    out = resolve_overlaps(masks, [box_evidence(shape, a), box_evidence(shape, b)])
    assert not (out[0] & out[1]).any()
    assert ((out[0] | out[1]) == (masks[0] | masks[1])).all()  # nothing is lost
    # a's right edge (x = 59) lies inside b: b owns it, and a's mask ends half-way (x = 50)
    assert not out[0][:, 50:].any() and out[1][:, 50:].all() and out[0][:, :50].all()


def test_cam_moves_the_split_towards_the_weaker_box() -> None:
    shape = (60, 100)
    a, b = (0, 0, 60, 60), (40, 0, 100, 60)
    masks = [box_mask(shape, a), box_mask(shape, b)]
    cam_a = np.ones(shape, np.float32)
    plain = resolve_overlaps(masks, [box_evidence(shape, a), box_evidence(shape, b)])
    strong = resolve_overlaps(masks, [box_evidence(shape, a, cam_a), box_evidence(shape, b, np.zeros(shape))])
    assert strong[0].sum() > plain[0].sum()


def test_uncontested_masks_are_unchanged_and_inputs_untouched() -> None:
    shape = (40, 40)
    m1, m2 = box_mask(shape, (0, 0, 10, 10)), box_mask(shape, (20, 20, 30, 30))
    ev = [box_evidence(shape, (0, 0, 12, 12)), box_evidence(shape, (18, 18, 32, 32))]
    out = resolve_overlaps([m1, m2], ev)
    assert (out[0] == m1).all() and (out[1] == m2).all() and out[0] is not m1
    with pytest.raises(ValueError):
        resolve_overlaps([m1, m2], ev[:1])


def test_a_nested_box_keeps_its_pixels() -> None:
    """A dog box inside a chair box: the dog's mask is the dog's, whatever the chair's mask claims."""
    from model.overlaps import evidence_maps, nested

    shape = (100, 100)
    chair, dog = (0, 0, 100, 100), (40, 40, 90, 90)
    assert nested(dog, chair) and not nested(chair, dog)
    masks = [box_mask(shape, (0, 0, 100, 100)), box_mask(shape, (45, 45, 85, 85))]
    out = resolve_overlaps(masks, evidence_maps(shape, [chair, dog], [None, None]))
    assert (out[1] == masks[1]).all() and not (out[0] & out[1]).any()
