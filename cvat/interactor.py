"""``cvat-cli function create-native "camcut" --function-module cvat.interactor``, then run-agent."""

from __future__ import annotations

from .sdk_functions import InteractionFunction


def create() -> InteractionFunction:
    return InteractionFunction()
