"""The interaction function in process: its preprocess step runs the engine's own image pass, so a
detect on the preprocessed image reuses it (cvat_sdk calls preprocess once per frame and detect
once per prompt). The agent's subprocess route is tests/cvat/test_sdk_agent.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from cvat_sdk.masks import decode_mask

from cvat.sdk_functions import InteractionFunction
from model.segmenter import mask_iou

from .conftest import gt_union, jpeg, pil_rgb, voc_boxes

STEM = "2007_000738"  # one aeroplane


@dataclass
class Prompts:  # cvat_sdk's InteractionPrompts is an abstract interface: the agent fills it from a request
    pos_points: Sequence[tuple[float, float]]
    neg_points: Sequence[tuple[float, float]]
    bounding_box: tuple[tuple[float, float], tuple[float, float]] | None


def test_detect_after_preprocess_runs_no_second_cnn_pass(engine) -> None:  # type: ignore[no-untyped-def]
    """The featcut engine's pass gives the CAMs and the hypercolumns at once; preprocess used to run
    CamNet.run (CAMs alone), so every detect ran the whole network again for the hypercolumns."""
    fn = InteractionFunction(engine)
    passes: list[int] = []
    hook = engine.segmenter.net.net.features[0].register_forward_hook(lambda *_: passes.append(1))
    try:
        pp = fn.preprocess_image(None, pil_rgb(jpeg(STEM).read_bytes()))  # type: ignore[arg-type]
        assert len(passes) == 1
        (_, (x0, y0, x1, y1)) = voc_boxes(STEM)[0]
        shapes = fn.detect(None, pp, Prompts([], [], ((x0, y0), (x1, y1))))  # type: ignore[arg-type]
        shapes += fn.detect(None, pp, Prompts([((x0 + x1) / 2, (y0 + y1) / 2)], [], ((x0, y0), (x1, y1))))  # type: ignore[arg-type]
    finally:
        hook.remove()
    assert len(passes) == 1, "detect ran the CNN again"
    h, w = pp.rgb.shape[:2]
    for shape in shapes:
        assert mask_iou(decode_mask(shape.points, image_width=w, image_height=h).astype(bool), gt_union(STEM)) > 0.5
    assert len(shapes) == 2 and not np.array_equal(shapes[0].points, [])


def test_the_cvat_engine_runs_the_configuration_the_backend_serves(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """CAMCUT_CONFIG, featcut by default, as the Label Studio backend: the CVAT routes ran the
    report's `reference` pipeline (full-size CNN, GrabCut) whatever the setting said."""
    from cvat.engine import Engine

    monkeypatch.delenv("CAMCUT_CONFIG", raising=False)
    assert Engine().segmenter.config.name == "featcut"
    monkeypatch.setenv("CAMCUT_CONFIG", "default")
    assert Engine().segmenter.config.name == "default"
