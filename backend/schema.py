"""The project's labelling config, reduced to what camcut reads and writes (:class:`Schema`)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from label_studio_sdk.label_interface import LabelInterface

from .errors import SchemaError

__all__ = ["Schema", "SchemaError", "parse_schema"]


@dataclass(frozen=True)
class Schema:
    """Names of the tags camcut uses: the BrushLabels it writes to, the Image it is on and that
    image's data field, and the prompt tags (rectangles, choices, keypoints) on the same image."""

    brush_from: str
    image_to: str
    value_key: str
    brush_labels: tuple[str, ...]
    rect_from: frozenset[str]
    choices_from: frozenset[str]
    keypoint_from: frozenset[str]


def _label_values(control: Any) -> tuple[str, ...]:
    attrs = getattr(control, "labels_attrs", None) or {}
    return tuple(str(getattr(a, "attr", {}).get("value", k)) for k, a in attrs.items())


def parse_schema(label_config: str) -> Schema:
    if not isinstance(label_config, str) or not label_config.strip():  # checked before the cache: a list is unhashable
        raise SchemaError("the project has no labelling config")
    return _parse_schema(label_config)


@functools.lru_cache(maxsize=64)
def _parse_schema(label_config: str) -> Schema:
    try:
        li = LabelInterface(label_config)
        controls = list(li.controls)
    except Exception as exc:  # the SDK raises several XML/validation exception types
        raise SchemaError(f"the labelling config is not valid XML: {exc}") from None
    images = {o.name: o for o in li.objects if o.tag.lower() == "image"}
    brush = [c for c in controls if c.tag.lower() in ("brushlabels", "brush") and any(t in images for t in c.to_name)]
    if not brush:
        raise SchemaError(
            "the labelling config has no <BrushLabels> tag on an <Image>: camcut predicts brush masks, "
            'add e.g. <BrushLabels name="mask" toName="image"><Label value="dog"/></BrushLabels>'
        )
    b = brush[0]
    image_to = next(t for t in b.to_name if t in images)
    value = str(images[image_to].value or "")
    if not value.startswith("$") or len(value) < 2:
        raise SchemaError(f'the <Image name="{image_to}"> tag needs value="$field", got {value!r}')

    def on_image(*tags: str) -> frozenset[str]:
        return frozenset(c.name for c in controls if c.tag.lower() in tags and image_to in c.to_name)

    return Schema(
        brush_from=b.name,
        image_to=image_to,
        value_key=value[1:],
        brush_labels=_label_values(b),
        rect_from=on_image("rectanglelabels", "rectangle"),
        choices_from=on_image("choices"),
        keypoint_from=on_image("keypointlabels", "keypoint"),
    )
