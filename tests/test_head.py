"""model/head.py: the learned head on real VOC images (features, arrays round trip, the gate)."""

from __future__ import annotations

import numpy as np
import pytest

from evaluator.dataset import VocDataset
from model.engine import Segmenter, get_config
from model.head import MIN_OBJECTS, N_PIXEL, Head, HeadSet, ObjectSample, correction_sample, fit_head, fit_heads
from tests.backend.conftest import VOC


@pytest.fixture(scope="module")
def samples() -> list[ObjectSample]:
    ds = VocDataset(VOC)
    seg = Segmenter(get_config("featcut"))
    out: list[ObjectSample] = []
    for image_id in ds.ids("train")[:6]:
        s = ds.load(image_id)
        seg.heads = HeadSet()
        seg.set_image(s.image)
        for obj in s.objects:
            gt = s.object_mask == obj.instance
            if gt.any():
                got = correction_sample(seg, obj.box, obj.name, gt, s.object_mask != 255)
                if got is not None:
                    out.append(got)
    return out


def test_samples_are_the_corrected_masks_on_the_cut_grid(samples: list[ObjectSample]) -> None:
    assert len(samples) >= 10
    for s in samples:
        assert s.x.shape == (len(s.y), N_PIXEL) and s.x.dtype == np.float16 and np.isfinite(s.x).all()
        assert 0.0 <= s.core_iou <= 1.0
    # the corrected mask lies in its box (column 3: in box), up to the box's rounding at the grid
    inside = sum(int(s.y[s.x[:, 3] > 0.5].sum()) for s in samples)
    assert inside >= 0.95 * sum(int(s.y.sum()) for s in samples) > 0


def test_recording_does_not_change_the_answer() -> None:
    ds = VocDataset(VOC)
    s = ds.load(ds.ids("train")[0])
    obj = s.objects[0]
    plain = Segmenter(get_config("featcut"))
    plain.set_image(s.image)
    rec = Segmenter(get_config("featcut"), net=plain.net)
    rec.heads = HeadSet()
    rec.set_image(s.image)
    a, b = plain.segment_box(obj.box, obj.name, agreement=True), rec.segment_box(obj.box, obj.name, agreement=True)
    assert np.array_equal(a.mask, b.mask) and a.score == b.score


def test_head_arrays_round_trip_and_refuse_a_mismatch(samples: list[ObjectSample]) -> None:
    head = fit_head(samples, epochs=2)
    again = Head.from_arrays(head.to_arrays())
    x = samples[0].x.astype(np.float32)
    assert np.allclose(head.logits(x, samples[0].voc_class), again.logits(x, samples[0].voc_class))
    bad = head.to_arrays()
    bad["format"] = np.array([99])
    with pytest.raises(ValueError):
        Head.from_arrays(bad)


def test_untrained_head_is_the_core(samples: list[ObjectSample]) -> None:
    """Zero epochs: the correction network is zero, so the head's logit is the core's unary."""
    head = fit_head(samples, epochs=0)
    x = samples[0].x.astype(np.float32)
    assert np.allclose(head.logits(x, samples[0].voc_class), x[:, 0] * 10.0, atol=1e-4)


def test_gate_keeps_the_training_free_model_with_few_corrections(samples: list[ObjectSample]) -> None:
    rep = fit_heads(samples[: MIN_OBJECTS - 1])
    assert not rep.accepted and rep.heads == {}
    rep = fit_heads(samples * 3, epochs=3, min_objects=3 * len(samples) + 1)
    assert not rep.accepted and rep.heads == {} and rep.holdout == 0


def test_gate_never_keeps_a_head_worse_on_the_held_out(samples: list[ObjectSample]) -> None:
    rep = fit_heads(samples * 3, epochs=3, min_objects=3 * len(samples))  # the gate past the size rule
    assert rep.holdout > 0
    assert rep.accepted == (rep.new_iou > rep.old_iou + 0.005)
    if not rep.accepted:
        assert rep.heads == {}
