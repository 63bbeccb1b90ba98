"""The two ways a request can be unusable, shared by every part of the predictor."""

from __future__ import annotations


class SchemaError(ValueError):
    """The project's labelling config cannot be used (not XML, no BrushLabels on an Image)."""


class TaskError(ValueError):
    """One task cannot be predicted (reported in that task's result, the batch goes on)."""
