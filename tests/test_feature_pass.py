"""featcut's one CNN pass: the CAM, the hypercolumns and the tag propagation's fire maps come
from it, and the per-image PCA runs only when a cut reads the features (real VOC images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evaluator.dataset import VocDataset
from model import features, tagprop
from model.engine import Seeds, Segmenter, get_config

VOC = Path(__file__).resolve().parents[2] / "shared" / "voc2012" / "VOC2012"


@pytest.fixture(scope="module")
def sample():
    return VocDataset(VOC).load("2007_000039")


def _counting(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[tuple]:
    calls: list[tuple] = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_tags_use_the_hypercolumn_pass_instead_of_a_second_one(sample, monkeypatch: pytest.MonkeyPatch) -> None:
    seg = Segmenter(get_config("featcut"))
    passes = _counting(monkeypatch, features, "forward_features")
    monkeypatch.setattr(tagprop, "forward_features", features.forward_features)  # tagprop's own name for it
    seg.set_image(sample.image)
    res = seg.segment_classes([(sample.objects[0].name, None)])[0]
    assert not isinstance(res, Exception) and res.mask.any()
    # The passes that keep fire layers, by the longer side the network saw: one at the CNN's 320 px
    # (the hypercolumns, which the tags reuse; there were 2 at 320 when tagprop ran the network again
    # for fire3 / fire5) and the tags' second-scale pass at 1.5x, which keeps fire3 / fire5 for the
    # walk on its own grid (class_tag_walk_scaled, model/tagprop.py).
    sides = sorted(
        max(a[1].shape[:2]) if a[2] is None else min(a[2], max(a[1].shape[:2])) for a in passes if len(a) > 3 and "fire3" in a[3]
    )
    assert sides == [320, 480]


def test_box_answer_skips_the_pca_and_a_click_runs_it_once(sample, monkeypatch: pytest.MonkeyPatch) -> None:
    seg = Segmenter(get_config("featcut"))
    reductions = _counting(monkeypatch, features, "reduce_layer")
    seg.set_image(sample.image)
    o = sample.objects[0]
    first = seg.segment_box(o.box, o.name, agreement=True)
    assert reductions == []  # colour GMMs answer a box: the features are never read
    cx, cy = (o.box.x0 + o.box.x1) / 2, (o.box.y0 + o.box.y1) / 2
    seg.segment_box(o.box, o.name, seeds=Seeds(((cx, cy),)), previous=first.mask)
    assert len(reductions) == 3  # one per layer (fire3 / fire5 / fire9), at the first click
    seg.segment_box(o.box, o.name, seeds=Seeds(((cx, cy), (cx + 5, cy))), previous=first.mask)
    assert len(reductions) == 3  # kept for the next clicks on the image


def test_box_mask_is_the_same_whether_or_not_the_features_are_read(sample) -> None:
    """What makes skipping them safe: a cut that does not read them gives the same mask."""
    seg = Segmenter(get_config("featcut"))
    seg.set_image(sample.image)
    core = seg.cutter.core  # type: ignore[attr-defined]
    for o in sample.objects:
        plain = seg.segment_box(o.box, o.name).mask
        core.reads_features = lambda points, head: True  # force the resample + PCA path
        try:
            forced = seg.segment_box(o.box, o.name).mask
        finally:
            del core.reads_features
        assert np.array_equal(plain, forced)


def test_packed_layers_unpack_to_the_same_bits() -> None:
    rng = np.random.default_rng(0)
    a = np.maximum(rng.normal(size=(16, 9, 13)), 0).astype(np.float32)
    a[0, 0, :3] = [-0.0, np.float32(1e-40), np.inf]  # a signed zero, a subnormal: values, not zeros
    p = features.PackedLayer.of(a)
    assert p.values.size == np.count_nonzero(a.view(np.uint32))
    assert np.array_equal(p.unpack().view(np.uint32), a.view(np.uint32))


def test_set_image_leaves_the_output_compact_and_the_answers_unchanged(sample, monkeypatch: pytest.MonkeyPatch) -> None:
    """What a caller caches with the output of set_image (the backend's ImageCache keeps 8 images)
    holds the fire layers packed, the same values bit for bit, and no 1000-class CAM; a click,
    whose per-image PCA reads those layers, answers exactly as from the dense pass."""
    seg = Segmenter(get_config("featcut"))
    dense = features.PixelFeatures.of_image(seg.net.net, sample.image, 320)
    cnn = seg.set_image(sample.image)
    pf = cnn.features
    assert pf.cam is None and set(pf.raw) == set(dense.raw)
    assert all(isinstance(a, features.PackedLayer) for a in pf._raw.values())
    for name, a in dense.raw.items():
        assert np.array_equal(pf.raw_layer(name).view(np.uint32), a.view(np.uint32))
    o = sample.objects[0]
    seeds = Seeds((((o.box.x0 + o.box.x1) / 2, (o.box.y0 + o.box.y1) / 2),))
    cached = Segmenter(get_config("featcut"), net=seg.net)
    cached.set_image(sample.image, cnn=cnn)  # the annotator's next prompt: the cached, packed output
    packed_answer = cached.segment_box(o.box, o.name, seeds=seeds, agreement=True)
    monkeypatch.setattr(features.PixelFeatures, "pack", lambda self: None)  # as before: layers dense
    fresh = Segmenter(get_config("featcut"), net=seg.net)
    fresh.set_image(sample.image)
    assert isinstance(fresh.cnn.features._raw["fire3"], np.ndarray)
    dense_answer = fresh.segment_box(o.box, o.name, seeds=seeds, agreement=True)
    assert np.array_equal(packed_answer.mask, dense_answer.mask) and packed_answer.score == dense_answer.score
