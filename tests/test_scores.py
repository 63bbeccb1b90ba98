"""model/scores.py: a failed, fallen-back or empty mask never scores high (issue 13 item 1)."""

from __future__ import annotations

import numpy as np

from model.scores import FALLBACK_CAP, honest_score


def test_honest_score() -> None:
    full, empty = np.ones((4, 4), bool), np.zeros((4, 4), bool)
    assert honest_score(0.9, full, None) == 0.9
    assert honest_score(1.0, full, "cam_no_foreground") == FALLBACK_CAP  # GrabCut vs GrabCut agreed: says nothing
    assert honest_score(1.0, empty, None) == 0.0
    assert honest_score(1.7, full, None) == 1.0 and honest_score(-0.2, full, None) == 0.0
