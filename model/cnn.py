"""The CNN side of the engine: SqueezeNet 1.1 on numpy images, VOC CAMs and class probabilities.

* CamNet runs SqueezeNet 1.1 on the whole image (ImageNet normalisation), giving 1000 logits
  and the 1000-channel CAM at 1/16 of the input size.
* The CAM of a VOC class is the pixel-wise max over its ImageNet member classes
  (model/data/imagenet_to_voc.json, :func:`pool_voc_cams`).
* :func:`normalise` divides a CAM by its maximum so it lies in [0, 1]; a non-positive maximum
  means "no evidence" and gives an all-zero CAM.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from . import voc
from .image import to_rgb_uint8
from .squeezenet import IMAGENET_MEAN, IMAGENET_STD, SqueezeNet11, WeightsInfo, load_squeezenet


@dataclass(frozen=True)
class CnnOutput:
    """What one CNN pass yields and what the evaluator caches: logits and pooled VOC CAMs."""

    logits: np.ndarray  # (1000,) float32
    voc_cams: np.ndarray  # (20, h, w) float32, VOC_CLASSES order, >= 0
    # The same pass's hypercolumns (model.features.PixelFeatures) when the configuration uses
    # them (featcut), so that a caller caching this output (the backend's ImageCache) skips the
    # pass on the annotator's next prompt too; not part of the evaluator's disk cache.
    features: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ClassScore:
    voc_class: str
    probability: float  # softmax mass of the class's ImageNet members


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax of a logit vector, in float64 (max-shifted, so large logits cannot overflow)."""
    z = logits.astype(np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    return p


def class_probabilities(logits: np.ndarray, context: bool = False) -> list[ClassScore]:
    """VOC classes ranked by the softmax mass of their ImageNet members (0 for classes without any);
    with ``context``, of their context classes too (voc.cam_members: a person's garments are
    evidence of a person, as in the CAM). No index is in two classes' sums either way."""
    p = softmax(logits)
    scores = []
    for name in voc.VOC_CLASSES:
        members = voc.cam_members(name, context)
        scores.append(ClassScore(name, float(p[list(members)].sum()) if members else 0.0))
    return sorted(scores, key=lambda s: -s.probability)


def renormalised(scores: Sequence[ClassScore], classes: Iterable[str]) -> list[ClassScore]:
    """The probabilities of ``classes`` given that the image shows one of them: each class's
    mass divided by their total, ranked. A project whose labels are dog/cat/person asks "which
    of these?", not "which of 1000 ImageNet classes?" (where a dog photo's mass may be spread
    over many breeds and none reach a threshold). No mass on any of them: equal shares."""
    wanted = set(classes)
    keep = [s for s in scores if s.voc_class in wanted]
    if not keep:
        return []
    total = sum(max(s.probability, 0.0) for s in keep)
    if not math.isfinite(total) or total <= 0.0:
        return [ClassScore(s.voc_class, 1.0 / len(keep)) for s in keep]
    return sorted((ClassScore(s.voc_class, max(s.probability, 0.0) / total) for s in keep), key=lambda s: -s.probability)


# The ImageNet classes a VOC CAM may pool (247 members of a VOC class and person's 49 context
# classes: 296 of the 1000), in index order. A pass that needs the VOC CAMs and not the logits (the
# tag path's 480 px pass) runs the classifier for these rows alone: under a third of its cost, the
# same values bit for bit (model/features.py forward_features).
VOC_ROWS: tuple[int, ...] = tuple(sorted(set().union(*(voc.cam_members(c, context=True) for c in voc.VOC_CLASSES))))


def pool_voc_cams(cam1000: np.ndarray, rows: Sequence[int] | None = None, context: bool = False) -> np.ndarray:
    """(1000, h, w) ImageNet CAM -> (20, h, w) VOC CAMs by max over each class's members.

    ``rows``: ``cam1000`` holds only these ImageNet classes' maps, in this order (e.g. VOC_ROWS).
    ``context``: each class's context classes pooled too (person: the garments; voc.cam_members)."""
    at = None if rows is None else {r: i for i, r in enumerate(rows)}
    out = np.zeros((len(voc.VOC_CLASSES),) + cam1000.shape[1:], dtype=np.float32)
    for i, name in enumerate(voc.VOC_CLASSES):
        members = voc.cam_members(name, context)
        if members:
            out[i] = cam1000[list(members) if at is None else [at[m] for m in members]].max(axis=0)
    return out


def normalise(cam: np.ndarray, region: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, bool]:
    """Divide a non-negative CAM by its max (over ``region`` = (x0, y0, x1, y1) if given).

    Returns (cam in [0, 1], has_evidence). No evidence (max <= 0) gives an all-zero map.
    """
    ref = cam if region is None else cam[region[1] : region[3], region[0] : region[2]]
    peak = float(ref.max()) if ref.size else 0.0
    if not math.isfinite(peak) or peak <= 0.0:
        return np.zeros_like(cam, dtype=np.float32), False
    # in place: a 40 MP CAM is 160 MB, and divide + clip + astype made three of them per call
    out = np.divide(cam, peak, dtype=np.float32)
    np.clip(out, 0.0, 1.0, out=out)
    return out, True


class CamNet:
    """SqueezeNet 1.1 wrapped for numpy images; thread-safe, loads its weights once."""

    def __init__(self, weights: str | None = None, num_threads: int | None = None) -> None:
        self.net: SqueezeNet11
        self.net, self.weights_info = load_squeezenet(weights)
        # Channels-last (NHWC) layout: PyTorch's CPU max-pool is about 7x faster on it, and the
        # whole pass at 320 x 240 drops from 14 to 5 ms on 2 cores (README "Speed"); the CAM
        # differs from NCHW's by float rounding only (< 1e-4).
        # torch's stubs list .to(memory_format=) only for tensors; Module.to accepts it too
        self.net = self.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if num_threads:
            torch.set_num_threads(num_threads)
        self._lock = threading.Lock()
        self._mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)

    @property
    def weights(self) -> WeightsInfo:
        return self.weights_info

    def forward(self, rgb: np.ndarray, max_side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return (logits (1000,), cam (1000, h, w)) for an RGB uint8 image."""
        img = to_rgb_uint8(rgb)
        h, w = img.shape[:2]
        if max_side is not None and max(h, w) > max_side:
            s = max_side / max(h, w)
            img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        # SqueezeNet's first conv and three ceil-mode pools need about 17 px to produce a map.
        if min(img.shape[:2]) < 32:
            s = 32 / min(img.shape[:2])
            size = (max(32, round(img.shape[1] * s)), max(32, round(img.shape[0] * s)))
            img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
        x = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        x = ((x - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
        with self._lock, torch.inference_mode():
            logits, cam = self.net(x)
        return logits[0].numpy().astype(np.float32), np.ascontiguousarray(cam[0].numpy(), dtype=np.float32)

    def run(self, rgb: np.ndarray, max_side: int | None = None, context: bool = False) -> CnnOutput:
        logits, cam = self.forward(rgb, max_side)
        return CnnOutput(logits=logits, voc_cams=pool_voc_cams(cam, context=context))
