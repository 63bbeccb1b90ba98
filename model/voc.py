"""PASCAL VOC class names and the ImageNet-1k -> VOC translation table.

The table (``model/data/imagenet_to_voc.json``) is derived from the WordNet 3.0
hypernym hierarchy by ``tools/derive_imagenet_voc.py``; see
``docs/imagenet_to_voc.md``.  It is loaded once, at import time.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "CLASSES_WITHOUT_IMAGENET",
    "IMAGENET_CATEGORIES",
    "MAPPING_PATH",
    "MAPPING_VERSION",
    "UnknownClassError",
    "VOC_CLASSES",
    "cam_members",
    "context_members",
    "imagenet_members",
    "voc_class_of",
    "voc_index",
]

_HERE = Path(__file__).resolve().parent
MAPPING_PATH = _HERE / "data" / "imagenet_to_voc.json"
CATEGORIES_PATH = _HERE / "weights" / "imagenet1k_categories.json"

#: The 20 VOC classes; VOC label id = position + 1 (0 is background).
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


class UnknownClassError(ValueError):
    """Raised for a name that is not one of the 20 VOC classes."""

    def __init__(self, name: object) -> None:
        self.name = name
        super().__init__(f"unknown VOC class {name!r}; valid names: {', '.join(VOC_CLASSES)}")


def _load_categories() -> tuple[str, ...]:
    names = json.loads(CATEGORIES_PATH.read_text(encoding="utf-8"))
    if not isinstance(names, list) or len(names) != 1000 or not all(isinstance(n, str) for n in names):
        raise RuntimeError(f"{CATEGORIES_PATH} must be a JSON list of 1000 ImageNet class names")
    return tuple(names)


def _load_mapping(table: dict) -> tuple[str, Mapping[str, tuple[int, ...]], Mapping[int, str]]:
    classes = table["classes"]
    if tuple(classes) != VOC_CLASSES:
        raise RuntimeError(f"{MAPPING_PATH}: classes must be the 20 VOC classes in VOC order")
    members: dict[str, tuple[int, ...]] = {}
    owner: dict[int, str] = {}
    for voc, entries in classes.items():
        indices = []
        for entry in entries:
            idx = int(entry["index"])
            if not 0 <= idx < 1000:
                raise RuntimeError(f"{MAPPING_PATH}: {voc}: ImageNet index {idx} out of range")
            if idx in owner:
                raise RuntimeError(f"{MAPPING_PATH}: ImageNet index {idx} in both {owner[idx]} and {voc}")
            owner[idx] = voc
            indices.append(idx)
        members[voc] = tuple(sorted(indices))
    return str(table["version"]), MappingProxyType(members), MappingProxyType(owner)


def _load_context(table: dict) -> Mapping[str, tuple[int, ...]]:
    """The table's "context" section: per VOC class, ImageNet classes seen where it is (person:
    the garments), which a CAM may pool but which are not the class's members."""
    context: dict[str, tuple[int, ...]] = {c: () for c in VOC_CLASSES}
    for voc, entry in table.get("context", {}).items():
        if voc not in context:
            raise RuntimeError(f"{MAPPING_PATH}: context for unknown VOC class {voc!r}")
        indices = tuple(sorted(int(m["index"]) for m in entry["members"]))
        if not all(0 <= i < 1000 for i in indices):
            raise RuntimeError(f"{MAPPING_PATH}: context of {voc}: ImageNet index out of range")
        context[voc] = indices
    return MappingProxyType(context)


IMAGENET_CATEGORIES: tuple[str, ...] = _load_categories()
MAPPING_VERSION: str
_MEMBERS: Mapping[str, tuple[int, ...]]
_OWNER: Mapping[int, str]
_TABLE = json.loads(MAPPING_PATH.read_text(encoding="utf-8"))
MAPPING_VERSION, _MEMBERS, _OWNER = _load_mapping(_TABLE)
_CONTEXT = _load_context(_TABLE)
del _TABLE

#: VOC classes with no ImageNet-1k counterpart (no CAM can be computed for them).
CLASSES_WITHOUT_IMAGENET: frozenset[str] = frozenset(c for c in VOC_CLASSES if not _MEMBERS[c])


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise UnknownClassError(name)
    key = name.lower()
    if key not in _MEMBERS:
        raise UnknownClassError(name)
    return key


def voc_index(name: str) -> int:
    """VOC label id (1..20) of an exact VOC class name, case-insensitive."""
    return VOC_CLASSES.index(_canonical(name)) + 1


def imagenet_members(voc_class: str) -> tuple[int, ...]:
    """Sorted ImageNet-1k indices that translate to ``voc_class`` (may be empty)."""
    return _MEMBERS[_canonical(voc_class)]


def context_members(voc_class: str) -> tuple[int, ...]:
    """Sorted ImageNet-1k indices of ``voc_class``'s context classes (may be empty): person's are
    ImageNet's garments (WordNet clothing.n.01), which SqueezeNet sees where a person is."""
    return _CONTEXT[_canonical(voc_class)]


def cam_members(voc_class: str, context: bool = False) -> tuple[int, ...]:
    """The ImageNet classes whose CAMs a VOC class's CAM pools: its members, and with ``context``
    its context classes too (EngineConfig.cam_context)."""
    members = imagenet_members(voc_class)
    return tuple(sorted(set(members) | set(context_members(voc_class)))) if context and members else members


def voc_class_of(imagenet_index: int) -> str | None:
    """VOC class an ImageNet-1k index translates to, or None."""
    if isinstance(imagenet_index, bool):
        raise TypeError("ImageNet index must be an int, got bool")
    imagenet_index = operator.index(imagenet_index)  # accepts numpy integers, rejects floats
    if not 0 <= imagenet_index < len(IMAGENET_CATEGORIES):
        raise IndexError(f"ImageNet index {imagenet_index} out of range 0..{len(IMAGENET_CATEGORIES) - 1}")
    return _OWNER.get(imagenet_index)
