"""Label Studio label names -> VOC classes: case-insensitive, with synonyms, overridable by a file.

The mapping file (``CAMCUT_LABEL_MAP``) is a JSON object ``{"label": "voc class" | null}``;
its entries win over the built-in synonyms (``null`` = "no engine class", i.e. naked GrabCut).
Keys are matched case-insensitively with ``_``/``-`` and repeated spaces folded to one space.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path

from model import VOC_CLASSES

SYNONYMS: dict[str, tuple[str, ...]] = {
    "aeroplane": ("airplane", "plane", "aircraft", "jet", "airliner"),
    "bicycle": ("bike", "cycle"),
    "bird": ("birds",),
    "boat": ("ship", "vessel", "sailboat"),
    "bottle": ("bottles",),
    "bus": ("buses", "coach"),
    "car": ("cars", "automobile", "vehicle"),
    "cat": ("cats", "kitten", "kitty"),
    "chair": ("chairs", "seat"),
    "cow": ("cows", "cattle"),
    "diningtable": ("dining table", "table", "dinner table"),
    "dog": ("dogs", "puppy"),
    "horse": ("horses", "pony"),
    "motorbike": ("motorcycle", "motor bike", "motorbike", "scooter"),
    "person": ("people", "pedestrian", "human", "man", "woman", "child", "persons", "rider"),
    "pottedplant": ("potted plant", "plant", "houseplant", "flower pot"),
    "sheep": ("lamb",),
    "sofa": ("couch",),
    "train": ("trains", "locomotive"),
    "tvmonitor": ("tv", "monitor", "television", "tv monitor", "screen", "tv/monitor"),
}


class LabelMapError(ValueError):
    """The mapping file is missing, not JSON, or maps to something that is not a VOC class."""


def normalise(label: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[_\-]+", " ", str(label))).strip().lower()


class LabelMap:
    """Resolve a label to a VOC class name or None; ``version`` changes with the mapping."""

    def __init__(self, overrides: Mapping[str, str | None] | None = None) -> None:
        table: dict[str, str | None] = {}
        for voc in VOC_CLASSES:
            table[normalise(voc)] = voc
            for syn in SYNONYMS.get(voc, ()):
                table[normalise(syn)] = voc
        clean: dict[str, str | None] = {}
        for key, value in (overrides or {}).items():
            if value is not None:
                v = normalise(value).replace(" ", "")
                if v not in VOC_CLASSES:
                    raise LabelMapError(f"label map: {key!r} -> {value!r} is not a VOC class ({', '.join(VOC_CLASSES)})")
                value = v
            clean[normalise(key)] = value
        table.update(clean)
        self._table = table
        digest = hashlib.sha256(json.dumps(sorted(clean.items(), key=str), sort_keys=True).encode()).hexdigest()
        self.version = "builtin" if not clean else f"map-{digest[:10]}"

    @classmethod
    def from_file(cls, path: str | Path | None) -> LabelMap:
        if not path:
            return cls()
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LabelMapError(f"label map file not found: {p}") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise LabelMapError(f"label map file {p} is not readable JSON: {exc}") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in data.items()
        ):
            raise LabelMapError(f"label map file {p} must be a JSON object of label -> VOC class name or null")
        return cls(data)

    def resolve(self, label: str) -> str | None:
        key = normalise(label)
        if key in self._table:
            return self._table[key]
        squashed = key.replace(" ", "")
        return self._table.get(squashed)

    def brush_label_for(self, voc_class: str, brush_labels: list[str]) -> str | None:
        """The BrushLabels label naming ``voc_class`` (exact name first, then any synonym)."""
        for lab in brush_labels:
            if normalise(lab).replace(" ", "") == voc_class:
                return lab
        for lab in brush_labels:
            if self.resolve(lab) == voc_class:
                return lab
        return None
