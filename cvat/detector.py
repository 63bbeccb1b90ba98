"""``cvat-cli ... --function-module cvat.detector [-p labels=str:Cat,Dog] [-p label_map=str:FILE]``."""

from __future__ import annotations

from .sdk_functions import DetectionFunction


def create(labels: str | None = None, label_map: str | None = None) -> DetectionFunction:
    return DetectionFunction(labels, label_map)
