"""cvat-sdk auto-annotation functions (cvat_sdk.auto_annotation, cvat-sdk 2.80.0).

* :class:`DetectionFunction` - ``cvat-cli task auto-annotate --function-module cvat.detector``
  and ``cvat-cli function create-native`` / ``run-agent``: no prompt, one mask (or polygons
  with ``--conv-mask-to-poly``) per class the CNN finds among the spec's labels.
* :class:`InteractionFunction` - ``cvat-cli function create-native`` / ``run-agent`` for the
  UI's AI tools: box and/or clicks -> one mask; the CNN runs once per frame in
  ``preprocess_image`` (the agent caches its result per task/frame).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import cvat_sdk.auto_annotation as cvataa
import numpy as np
import PIL.Image
from cvat_sdk.masks import encode_mask

from model import VOC_CLASSES, CnnOutput

from .engine import Engine, PromptError, label_map, polygons, resolve_labels
from .images import from_pil

log = logging.getLogger("camcut.cvat")

try:
    # cvat-cli's agent reports only this exception's message back to the CVAT server (and so to
    # the user who clicked); any other exception becomes "Unknown error". It is private API of
    # the pinned cvat-cli 2.80.0, so fall back to ValueError if it moves.
    from cvat_cli._internal.agent_driver import BadArError as _PromptRejected
except ImportError:  # pragma: no cover - cvat-sdk installed without cvat-cli
    _PromptRejected = ValueError


def parse_labels(labels: str | Sequence[str] | None) -> list[str]:
    """``-p labels=str:Airplane,Dog`` -> ["Airplane", "Dog"]; None -> the 20 VOC class names."""
    if labels is None:
        return list(VOC_CLASSES)
    items = labels.split(",") if isinstance(labels, str) else list(labels)
    return [s.strip() for s in items if s.strip()]


class DetectionFunction:
    """Spec: the given label names that resolve to an engine class (by backend.labels rules);
    a name that resolves to none is refused at start-up, naming it, rather than silently
    never produced."""

    def __init__(
        self, labels: str | Sequence[str] | None = None, label_map_file: str | None = None, engine: Engine | None = None
    ) -> None:
        names = parse_labels(labels)
        self.classes = resolve_labels(names, label_map(label_map_file))
        unknown = [n for n in names if n not in self.classes]
        if unknown:
            raise cvataa.BadFunctionError(
                f"labels with no camcut class (or naming a class twice): {unknown}; camcut knows {list(VOC_CLASSES)}"
                " and their synonyms, or map them in a CAMCUT_LABEL_MAP file"
            )
        self._ids = {name: i for i, name in enumerate(self.classes)}
        self.spec = cvataa.DetectionFunctionSpec(
            labels=[cvataa.label_spec(name, i, type="mask") for name, i in self._ids.items()]
        )
        self.engine = engine or Engine()

    def detect(self, context: cvataa.DetectionFunctionContext, image: PIL.Image.Image) -> list[cvataa.DetectionAnnotation]:
        rgb = from_pil(image)
        out: list[cvataa.DetectionAnnotation] = []
        for d in self.engine.detect(rgb, self.classes, context.conf_threshold):
            lid = self._ids[d.label]
            attrs = {"label_id": lid}
            if context.conv_mask_to_poly:
                out.extend(cvataa.polygon(**attrs, points=p) for p in polygons(d.mask))
            else:
                out.append(cvataa.mask(**attrs, points=encode_mask(d.mask)))
        return out


@dataclass(frozen=True)
class Preprocessed:
    rgb: np.ndarray
    cnn: CnnOutput


class InteractionFunction:
    """Box optional (``startswith_box_optional``), clicks optional: either suffices."""

    spec = cvataa.InteractionFunctionSpec(min_pos_points=0, min_neg_points=0, min_bounding_boxes=0)

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine or Engine()

    def preprocess_image(self, context: cvataa.InteractionFunctionContext, image: PIL.Image.Image) -> Preprocessed:
        rgb = from_pil(image)
        # set_image's own output: the CAMs pooled as the configuration pools them, and featcut's
        # hypercolumns with them, so detect's set_image reuses the pass instead of running it again.
        return Preprocessed(rgb, self.engine.segmenter.set_image(rgb))

    def detect(
        self, context: cvataa.InteractionFunctionContext, pp_image: Preprocessed, prompts: cvataa.InteractionPrompts
    ) -> list[cvataa.InteractionResultShape]:
        seg = self.engine.segmenter
        seg.set_image(pp_image.rgb, cnn=pp_image.cnn)  # cached CNN output: no second forward pass
        bbox = None
        if prompts.bounding_box is not None:
            (x1, y1), (x2, y2) = prompts.bounding_box
            bbox = (x1, y1, x2, y2)
        try:
            mask = self.engine.interact(prompts.pos_points, prompts.neg_points, bbox)
        except PromptError as exc:
            # The agent fails this one request with this message and keeps serving.
            raise _PromptRejected(f"camcut cannot use this prompt: {exc}") from exc
        if not mask.any():
            return []
        return [cvataa.InteractionResultShape(type="mask", points=encode_mask(mask))]
