"""Offline evaluator: scores camcut's engine on a VOCdevkit folder with the report's metrics."""
