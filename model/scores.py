"""What a mask's score may say: a mask that failed, fell back or is empty never scores high.

The engine's score is the agreement (IoU) of a mask with a second opinion. After a fallback the
two opinions are often the same technique (a CAM box whose CAM had no foreground falls back to
naked GrabCut, and its second opinion *is* naked GrabCut: IoU 1.0 for a mask that missed the
object), so the agreement says nothing; such masks are capped at :data:`FALLBACK_CAP`, below
every mask that was made as asked and agrees with its second opinion at all.
"""

from __future__ import annotations

import numpy as np

FALLBACK_CAP = 0.1


def honest_score(score: float, mask: np.ndarray, fallback: str | None) -> float:
    """0 for an empty mask, at most FALLBACK_CAP after a fallback, else ``score`` (clipped to [0, 1])."""
    if not np.asarray(mask, bool).any():
        return 0.0
    s = min(max(float(score), 0.0), 1.0)
    return min(s, FALLBACK_CAP) if fallback else s
