"""The project's labelling config, reduced to what camcut reads and writes (:class:`Schema`)."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
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


# the same bound as CAMCUT_MAX_CONFIG_BYTES' default, for callers without settings at hand
DEFAULT_MAX_CONFIG_BYTES = 1_048_576
CACHE_ENTRIES = 64
CACHE_BYTES = 8 * 1_048_576  # of config text parsed by the cached entries: their Schemas hold at most that much


class _SchemaCache:
    """Parsed configs keyed by the SHA-256 of their text (not the text itself: 40 distinct 9 MB
    configs kept +586 MB in an lru_cache keyed on whole strings), bounded by entries and by the
    bytes of config text behind them (a Schema's label tuple grows with its config)."""

    def __init__(self) -> None:
        self._items: OrderedDict[bytes, tuple[Schema, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, label_config: str) -> Schema:
        key = hashlib.sha256(label_config.encode("utf-8", "surrogatepass")).digest()
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit[0]
        schema = _parse_schema(label_config)  # a SchemaError is not cached: it costs one parse each time
        with self._lock:
            self._items[key] = (schema, len(label_config))
            while len(self._items) > CACHE_ENTRIES or sum(n for _, n in self._items.values()) > CACHE_BYTES:
                self._items.popitem(last=False)
        return schema

    def __len__(self) -> int:
        return len(self._items)


_CACHE = _SchemaCache()


def parse_schema(label_config: str, max_bytes: int = DEFAULT_MAX_CONFIG_BYTES) -> Schema:
    if not isinstance(label_config, str) or not label_config.strip():  # checked before the cache: a list is unhashable
        raise SchemaError("the project has no labelling config")
    size = len(label_config.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise SchemaError(f"the labelling config has {size} bytes, more than CAMCUT_MAX_CONFIG_BYTES={max_bytes}")
    return _CACHE.get(label_config)


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
