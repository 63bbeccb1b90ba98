"""The report's digitizer (CAM -> 4-valued GrabCut mask) and its named techniques.

A CAM scaled to [0, 1] is cut by thresholds 0 <= t0 < t1 < t2 <= 1 into
    [0, t0)  definite background      (cv2.GC_BGD)
    [t0, t1) probable background      (cv2.GC_PR_BGD)
    [t1, t2) probable foreground      (cv2.GC_PR_FGD)
    [t2, 1]  definite foreground      (cv2.GC_FGD)
The report writes the last interval as [t2, 1); we close it at 1 so the CAM's peak is not left
unlabelled, except that t2 == 1 means "no definite foreground", which is what its PF PB variant
(0, t, 1) is meant to be ("masks only taking values in {probable fg, probable bg}").

Named variants with one threshold t and delta = 0.01 (report section 5.1):
    PF PB: (0, t, 1)         F PF: (0, delta, t)         F PB: (0, t, t + delta)
plus the baselines "grabcut" (box only, no CAM) and "cam" (the digitized CAM with no GrabCut,
foreground = p >= t).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

DELTA = 0.01
GC_BGD, GC_FGD, GC_PR_BGD, GC_PR_FGD = cv2.GC_BGD, cv2.GC_FGD, cv2.GC_PR_BGD, cv2.GC_PR_FGD

Kind = Literal["grabcut", "cam", "gccam"]
VARIANTS: tuple[str, ...] = ("grabcut", "cam", "pfpb", "fpf", "fpb")
VARIANT_LABELS = {"grabcut": "grabcut", "cam": "cam", "pfpb": "PF PB", "fpf": "F PF", "fpb": "F PB"}


class ThresholdError(ValueError):
    """Thresholds outside 0 <= t0 < t1 < t2 <= 1, or an unknown technique name."""


@dataclass(frozen=True)
class Thresholds:
    t0: float
    t1: float
    t2: float

    def __post_init__(self) -> None:
        vals = (self.t0, self.t1, self.t2)
        if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in vals):
            raise ThresholdError(f"thresholds must be finite numbers, got {vals}")
        if not (0.0 <= self.t0 < self.t1 < self.t2 <= 1.0):
            raise ThresholdError(f"thresholds must satisfy 0 <= t0 < t1 < t2 <= 1, got t0={self.t0}, t1={self.t1}, t2={self.t2}")


def digitize(cam: np.ndarray, th: Thresholds) -> np.ndarray:
    """Map a [0, 1] CAM to a uint8 GrabCut mask (values cv2.GC_*), see module docstring."""
    p = np.asarray(cam, dtype=np.float32)
    out = np.full(p.shape, GC_PR_BGD, dtype=np.uint8)
    out[p < th.t0] = GC_BGD
    out[p >= th.t1] = GC_PR_FGD
    if th.t2 < 1.0:
        out[p >= th.t2] = GC_FGD
    return out


@dataclass(frozen=True)
class Technique:
    """One evaluated technique: a variant name and, except for naked GrabCut, a threshold t."""

    variant: str
    t: float | None = None

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ThresholdError(f"unknown technique {self.variant!r}; expected one of {', '.join(VARIANTS)}")
        if self.variant == "grabcut":
            if self.t is not None:
                raise ThresholdError("naked grabcut takes no threshold")
        else:
            if self.t is None:
                raise ThresholdError(f"technique {self.variant!r} needs a threshold t")
            _ = self.thresholds  # builds Thresholds, which validates t

    @property
    def kind(self) -> Kind:
        return {"grabcut": "grabcut", "cam": "cam"}.get(self.variant, "gccam")  # type: ignore[return-value]

    @property
    def thresholds(self) -> Thresholds | None:
        t = self.t
        if t is None:
            return None
        if self.variant in ("cam", "pfpb"):
            return Thresholds(0.0, t, 1.0)
        if self.variant == "fpf":
            return Thresholds(0.0, DELTA, t)
        return Thresholds(0.0, t, t + DELTA)  # fpb

    @property
    def label(self) -> str:
        base = VARIANT_LABELS[self.variant]
        return base if self.t is None else f"{base} {self.t:g}"

    @classmethod
    def parse(cls, text: str) -> Technique:
        """Parse 'grabcut', 'cam 0.3', 'fpf:0.6', 'F PF 0.6', 'pfpb-0.3'."""
        s = text.strip().lower().replace("_", " ").replace(":", " ").replace("-", " ")
        parts = s.split()
        t: float | None = None
        if parts and _is_number(parts[-1]):
            t = float(parts.pop())
        name = "".join(parts)
        if name not in VARIANTS:
            raise ThresholdError(
                f"unknown technique {text!r}; expected e.g. 'grabcut', 'cam 0.3', 'pfpb 0.3', 'fpf 0.6', 'fpb 0.2'"
            )
        return cls(name, t)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True
