"""Engine configurations and the cut seam (model/config.py, model/cut.py, model/cnn.py softmax)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from evaluator.dataset import VocDataset
from model import engine
from model.cnn import CamNet, class_probabilities, softmax
from model.config import CONFIGS, DEFAULT, QUALITY, REFERENCE, EngineConfig, get_config
from model.cut import CUTS, Cut, CutInputs, GrabCutCut, make_cut, windowed_cut
from model.prompts import Box
from model.segmenter import Segmenter
from model.techniques import GC_BGD, GC_FGD, GC_PR_BGD, GC_PR_FGD, Technique

VOC_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "voc2012" / "VOC2012"

# For every EngineConfig field, valid values; the test takes the first that differs from the preset's.
PERTURBED: dict[str, tuple[object, ...]] = {
    "name": ("other",),
    "cnn_max_side": (224,),
    "cam_norm": ("box", "image"),
    "cut": ("grabcut_twice",),
    "grabcut_iterations": (2,),
    "crop_margin": (0.1,),
    "grabcut_max_side": (200,),
    "class_grabcut_max_side": (200,),
    "box_technique": (Technique("fpb", 0.6),),
    "class_technique": (Technique("pfpb", 0.4),),
    "score_max_side": (48,),
    "class_exclusive": (True, False),
    "class_window_margin": (0.5,),
    "class_tagprop": (True, False),
    "class_tag_scales": ((1.5,), ()),
    "class_tag_fallback": (0.5, None),
    "class_tag_walk_scaled": (True, False),
    "class_tag_keep_rel": (0.5, None),
    "class_tag_recut": (True, False),
    "class_tag_support_score": (True, False),
    "score_confidence": (True, False),
    "box_empty_fallback": (0.5, None),
    "cam_context": (True, False),
}


@pytest.fixture
def second_cut(monkeypatch):
    """A second registered cut, the way the next implementation will be added."""
    monkeypatch.setitem(CUTS, "grabcut_twice", lambda config: GrabCutCut(config.grabcut_iterations + 1))


def test_every_field_has_a_perturbation():
    assert set(PERTURBED) == {f.name for f in dataclasses.fields(EngineConfig)}


@pytest.mark.parametrize("preset", [REFERENCE, DEFAULT, QUALITY], ids=lambda c: c.name)
@pytest.mark.parametrize("field", sorted(PERTURBED))
def test_changing_any_field_changes_the_version_key(second_cut, preset, field):
    value = next(v for v in PERTURBED[field] if v != getattr(preset, field))
    other = dataclasses.replace(preset, **{field: value})
    assert other.version_key != preset.version_key, field


def test_version_key_starts_with_the_name_and_is_stable():
    for name, cfg in CONFIGS.items():
        assert cfg.version_key.startswith(f"{name}:")
        assert cfg.version_key == dataclasses.replace(cfg).version_key
    # floats are exact: thresholds closer than %g would print must still differ
    a = dataclasses.replace(DEFAULT, box_technique=Technique("fpf", 0.7000001))
    assert a.version_key != DEFAULT.version_key


def test_the_cuts_own_settings_are_in_the_version_key(monkeypatch):
    """featcut's FeatCutParams change masks as much as EngineConfig's fields: a changed default
    (session 5's fit_fg_cam, session 6's keep_far) must change the model version too."""
    from model import featcut

    featcut_cfg = get_config("featcut")
    before = featcut_cfg.version_key
    assert make_cut(featcut_cfg).version_key in before
    served = featcut.FeatCutParams()
    monkeypatch.setattr(featcut, "FeatCutParams", lambda: dataclasses.replace(served, keep_far=0.0))
    assert featcut_cfg.version_key != before
    assert GrabCutCut().version_key == ""  # the GrabCut presets keep their keys


def test_presets_are_read_only_and_resolved_by_name():
    with pytest.raises(TypeError):
        cast("dict[str, EngineConfig]", CONFIGS)["mine"] = REFERENCE  # a Mapping to the type checker; try it anyway
    assert get_config("quality") is QUALITY
    with pytest.raises(ValueError, match="unknown engine configuration"):
        get_config("nope")


def test_compat_module_reexports_the_public_names():
    for name in (
        "Segmenter",
        "Box",
        "Seeds",
        "BoxPrompt",
        "EngineConfig",
        "get_config",
        "CONFIGS",
        "REFERENCE",
        "DEFAULT",
        "QUALITY",
        "MaskResult",
        "mask_iou",
        "CamNet",
        "CnnOutput",
        "ClassScore",
        "available_cores",
        "BoxError",
        "normalise",
        "MIN_BOX_SIDE",
    ):
        assert hasattr(engine, name), name
    assert engine.get_config("default") is DEFAULT


def test_unknown_cut_is_refused():
    with pytest.raises(ValueError, match="cut must be one of"):
        EngineConfig(cut="watershed")


def test_make_cut_builds_grabcut_from_the_config():
    cut = make_cut(dataclasses.replace(REFERENCE, grabcut_iterations=3))
    assert cut == GrabCutCut(3)


def test_softmax_and_class_probabilities():
    z = np.array([1000.0, 999.0, -5.0] + [0.0] * 997, np.float32)  # would overflow a naive exp
    p = softmax(z)
    assert p.dtype == np.float64 and abs(p.sum() - 1.0) < 1e-12 and p[0] > p[1] > p[2]
    scores = class_probabilities(np.zeros(1000, np.float32))
    assert len(scores) == 20 and all(a.probability >= b.probability for a, b in zip(scores, scores[1:], strict=False))


def test_a_garments_softmax_mass_is_a_persons_only_with_the_context_classes():
    """cam_context (featcut): person's probability sums its members' and its 49 garments' softmax
    mass; without, a photo the CNN calls "jersey" gives person nothing (the report)."""
    from model import voc

    z = np.zeros(1000, np.float32)
    z[610] = 20.0  # jersey, T-shirt: a garment, owned by no VOC class
    assert voc.voc_class_of(610) is None and 610 in voc.context_members("person")
    plain = {s.voc_class: s.probability for s in class_probabilities(z)}
    context = {s.voc_class: s.probability for s in class_probabilities(z, context=True)}
    assert plain["person"] < 1e-6 < 0.99 < context["person"]
    assert {c: p for c, p in plain.items() if c != "person"} == {c: p for c, p in context.items() if c != "person"}


class Recording(Cut):
    """A cut that remembers what it was given and returns the initial mask's foreground."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[int, ...], tuple[int, ...], CutInputs | None]] = []

    def cut(self, image: np.ndarray, init: np.ndarray, extras: CutInputs | None = None) -> np.ndarray:
        self.calls.append((image.shape, init.shape, extras))
        return (init == GC_FGD) | (init == GC_PR_FGD)


def test_windowed_cut_crops_downscales_and_keeps_hard_labels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (100, 200, 3), np.uint8)
    init = np.full((100, 200), GC_PR_BGD, np.uint8)
    init[20:80, 40:160] = GC_PR_FGD
    init[50, 100] = GC_BGD  # a hard label inside the object survives the downscale
    cam = rng.random((100, 200)).astype(np.float32)
    cut = Recording()
    m, fallback = windowed_cut(cut, image, init, (20, 10, 180, 90), 80, CutInputs(cam=cam))
    assert fallback is None
    [(img_shape, init_shape, extras)] = cut.calls
    assert img_shape == (40, 80, 3) and init_shape == (40, 80)
    assert extras is not None and extras.cam is not None and extras.cam.shape == (40, 80)
    assert not m[50, 100] and m[30:70, 60:140].sum() > 0.9 * 40 * 80
    assert not m[:10].any() and not m[:, :20].any() and not m[:, 180:].any()


def test_windowed_cut_without_background_adds_a_ring_or_falls_back():
    image = np.zeros((40, 40, 3), np.uint8)
    init = np.full((40, 40), GC_PR_FGD, np.uint8)
    cut = Recording()
    m, fallback = windowed_cut(cut, image, init, None, None)
    assert fallback is None and len(cut.calls) == 1 and not m[0].any()  # the ring is background
    tiny = np.full((4, 4), GC_FGD, np.uint8)
    m, fallback = windowed_cut(cut, image[:4, :4], tiny, None, None)
    assert fallback == "no_background" and m.all() and len(cut.calls) == 1


@pytest.mark.skipif(not VOC_ROOT.is_dir(), reason="needs ../shared/voc2012")
def test_segmenter_uses_the_registered_cut(second_cut):
    s = VocDataset(VOC_ROOT).load("2007_000039")
    net = CamNet()
    a = Segmenter(REFERENCE, net=net)
    b = Segmenter(dataclasses.replace(REFERENCE, cut="grabcut_twice"), net=net)
    assert b.cutter == GrabCutCut(2)
    cnn = a.set_image(s.image)
    b.set_image(s.image, cnn)
    box = s.objects[0].box
    assert isinstance(box, Box)
    ra, rb = a.segment_box(box, s.objects[0].name), b.segment_box(box, s.objects[0].name)
    assert ra.mask.shape == rb.mask.shape and not np.array_equal(ra.mask, rb.mask)
