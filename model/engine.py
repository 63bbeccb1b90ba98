"""The segmentation engine: set an image once (one CNN pass), then cheap calls per box or tag.

How the pieces combine (documented in README "How a mask is made"):

* CNN: SqueezeNet 1.1 on the whole image (ImageNet normalisation, no resize in the reference
  configuration), giving 1000 logits and the 1000-channel CAM at 1/16 of the input size.
* VOC CAM: the CAM of a VOC class is the pixel-wise max over its ImageNet member classes
  (model/data/imagenet_to_voc.json), upsampled bilinearly to the image size, then divided by
  its maximum (over the whole image in the reference configuration, or over the box with
  ``cam_norm="box"``), so it lies in [0, 1]. A non-positive maximum means "no evidence": the
  CAM is all zero.
* Object task (box): outside the box is definite background; inside, the digitized CAM
  (technique thresholds) or, for naked GrabCut, probable foreground everywhere (exactly what
  cv2.GC_INIT_WITH_RECT does). GrabCut then runs on the whole image (reference).
* Class task (tag): the digitized CAM of the whole image is GrabCut's initial mask.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence, TypeVar

import cv2
import numpy as np
import torch

from . import voc
from .grabcut import add_border_background, foreground, has_both_sides, run_grabcut
from .image import to_rgb_uint8
from .squeezenet import IMAGENET_MEAN, IMAGENET_STD, SqueezeNet11, WeightsInfo, load_squeezenet
from .techniques import GC_BGD, GC_FGD, GC_PR_BGD, GC_PR_FGD, Technique, digitize

# Boxes thinner than this (in pixels) are returned filled: GrabCut cannot model an object a
# pixel or two wide, and the annotator drew exactly that region.
MIN_BOX_SIDE = 4
# A GrabCut window around a box keeps at least this many pixels of context on each side.
CROP_MIN_PX = 8


class BoxError(ValueError):
    """A box with no area inside the image, or with non-finite coordinates."""


@dataclass(frozen=True)
class Box:
    """Pixel box, half-open: columns x0..x1-1, rows y0..y1-1 (floats are allowed)."""

    x0: float
    y0: float
    x1: float
    y1: float

    @classmethod
    def from_voc(cls, xmin: float, ymin: float, xmax: float, ymax: float) -> "Box":
        """VOC XML boxes are 1-based and inclusive."""
        return cls(xmin - 1, ymin - 1, xmax, ymax)

    def clip(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Integer box clipped to the image; raises BoxError if nothing is left."""
        vals = (self.x0, self.y0, self.x1, self.y1)
        if not all(isinstance(v, numbers.Real) and math.isfinite(v) for v in vals):
            raise BoxError(f"box coordinates must be finite numbers, got {vals}")
        x0, x1 = sorted((self.x0, self.x1))
        y0, y1 = sorted((self.y0, self.y1))
        cx0, cy0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
        cx1, cy1 = min(width, int(math.ceil(x1))), min(height, int(math.ceil(y1)))
        if cx1 <= cx0 or cy1 <= cy0:
            raise BoxError(f"box {vals} has no area inside the {width}x{height} image")
        return cx0, cy0, cx1, cy1


@dataclass(frozen=True)
class Seeds:
    """Hard hints from an annotator: clicks (pixel points) and brush strokes (bool masks).

    Positive hints become definite foreground, negative ones definite background; each click
    is a disk of radius ``max(3 px, 1% of the shorter image side)``.
    """

    positive_points: tuple[tuple[float, float], ...] = ()
    negative_points: tuple[tuple[float, float], ...] = ()
    positive_mask: np.ndarray | None = None
    negative_mask: np.ndarray | None = None

    def is_empty(self) -> bool:
        return not (self.positive_points or self.negative_points or _any(self.positive_mask) or _any(self.negative_mask))

    def rasterize(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """(positive, negative) bool masks of the image size; negative wins where both."""
        pos = np.zeros((height, width), np.uint8)
        neg = np.zeros((height, width), np.uint8)
        r = max(3, int(round(0.01 * min(height, width))))
        for pts, m in ((self.positive_points, pos), (self.negative_points, neg)):
            for x, y in pts:
                if not (math.isfinite(x) and math.isfinite(y)):
                    raise BoxError(f"click ({x}, {y}) is not a finite point")
                if 0 <= x < width and 0 <= y < height:
                    cv2.circle(m, (int(x), int(y)), r, 1, thickness=-1)
        p, n = pos.astype(bool), neg.astype(bool)
        for src, dst in ((self.positive_mask, p), (self.negative_mask, n)):
            if src is not None:
                if src.shape != (height, width):
                    raise BoxError(f"brush mask of shape {src.shape} does not match the {width}x{height} image")
                dst |= src.astype(bool)
        p &= ~n
        return p, n


def _any(m: np.ndarray | None) -> bool:
    return m is not None and bool(np.any(m))


@dataclass(frozen=True)
class BoxPrompt:
    """One box to segment: its class (needed by the CAM techniques), technique and seeds."""

    box: Box
    voc_class: str | None = None
    technique: Technique | None = None
    seeds: Seeds | None = None


def _known(voc_class: object) -> bool:
    try:
        voc.voc_index(voc_class)  # type: ignore[arg-type]
    except voc.UnknownClassError:
        return False
    return True


def _grown(x0: int, y0: int, x1: int, y1: int, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """A box grown by ``margin`` of its size on each side (at least CROP_MIN_PX), clipped."""
    mx = max(CROP_MIN_PX, int(round(margin * (x1 - x0))))
    my = max(CROP_MIN_PX, int(round(margin * (y1 - y0))))
    return max(0, x0 - mx), max(0, y0 - my), min(width, x1 + mx), min(height, y1 + my)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_T = TypeVar("_T")
_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _cut_pool(threads: int) -> ThreadPoolExecutor:
    """One process-wide pool per size, created on first use (so after a fork, never before)."""
    with _POOLS_LOCK:
        pool = _POOLS.get(threads)
        if pool is None:
            pool = _POOLS[threads] = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="camcut-cut")
        return pool


@dataclass(frozen=True)
class EngineConfig:
    """Everything that changes masks besides the technique; part of the model version."""

    name: str = "reference"
    cnn_max_side: int | None = None  # None: CNN on the full-resolution image (the report)
    cam_norm: str = "image"  # "image" | "box": where the VOC CAM's maximum is taken
    grabcut_iterations: int = 1
    # GrabCut window: None = the whole image (the report); else the box grown by this fraction
    # of its size on each side (at least CROP_MIN_PX), so the background model is local.
    crop_margin: float | None = None
    # GrabCut resolution: None = full; else the window is downscaled so its longer side is at
    # most this, and the mask is upsampled (bilinear on the 0/1 mask, threshold 0.5).
    # ``grabcut_max_side`` is for boxes, ``class_grabcut_max_side`` for the whole-image cuts of
    # tags and clicks: those lose far more at low resolution (README "Speed").
    grabcut_max_side: int | None = None
    class_grabcut_max_side: int | None = None
    box_technique: Technique = field(default_factory=lambda: Technique("fpf", 0.6))
    class_technique: Technique = field(default_factory=lambda: Technique("pfpb", 0.3))
    # Where the box task's CAM comes from: "image" = the whole-image CNN pass (the report);
    # "crop" = a CNN pass on the box's window resized to ``box_cnn_side``, class CAM from it;
    # "crop_agnostic" = same pass, CAM of the crop's own top-5 ImageNet classes weighted by
    # their probabilities (works for labels the ImageNet table covers poorly, e.g. person).
    box_cam: str = "image"
    box_cnn_side: int = 224
    # Resolution of the second-opinion GrabCut behind ``quality=True`` scores (None: the same as
    # the mask's own GrabCut). The score only ranks masks, and at 96 px it ranks them almost as well
    # as at full size (Spearman 0.449 vs 0.461 on 273 VOC boxes) for a quarter of the cost.
    score_max_side: int | None = None
    # Tags: the other classes tagged on the image compete for pixels. A pixel where another
    # tagged class's (raw) CAM is higher cannot be foreground of this one (it becomes probable
    # background), since a pixel has one class. The report segments each tag on its own (False).
    class_exclusive: bool = False
    # Tags: GrabCut window = the bounding box of the digitized CAM's foreground grown by this
    # fraction of its size on each side (None: the whole image, the report). As for boxes, a
    # local window gives GrabCut a background model of the object's surroundings.
    class_window_margin: float | None = None

    def __post_init__(self) -> None:
        if self.box_cam not in ("image", "crop", "crop_agnostic"):
            raise ValueError(f"box_cam must be 'image', 'crop' or 'crop_agnostic', got {self.box_cam!r}")
        if self.cam_norm not in ("image", "box"):
            raise ValueError(f"cam_norm must be 'image' or 'box', got {self.cam_norm!r}")
        if self.grabcut_iterations < 1:
            raise ValueError("grabcut_iterations must be >= 1")
        if self.cnn_max_side is not None and self.cnn_max_side < 32:
            raise ValueError("cnn_max_side must be >= 32 or None")
        for name in ("crop_margin", "class_window_margin"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise ValueError(f"{name} must be >= 0 or None")
        for name in ("grabcut_max_side", "class_grabcut_max_side", "score_max_side"):
            v = getattr(self, name)
            if v is not None and v < 16:
                raise ValueError(f"{name} must be >= 16 or None")

    @property
    def version_key(self) -> str:
        return (
            f"{self.name}:cnn={self.cnn_max_side or 'full'}:norm={self.cam_norm}:it={self.grabcut_iterations}"
            f":crop={self.crop_margin}:gc={self.grabcut_max_side or 'full'}/{self.class_grabcut_max_side or 'full'}:boxcam={self.box_cam}@{self.box_cnn_side}"
            f":score={self.score_max_side or 'gc'}:excl={int(self.class_exclusive)}:cwin={self.class_window_margin}"
            f":box={self.box_technique.label}:class={self.class_technique.label}"
        ).replace(" ", "")


REFERENCE = EngineConfig()

# Named configurations, selectable by name in the evaluator, the CLI and the backend.
# "default": the configuration the backend serves (README "Results" and "Speed" give the
# measurements behind each choice). It keeps the report's techniques (F PF for boxes, PF PB
# for tags) and changes how they run:
# * the CNN at <= 320 px (CNN sizes 320..full changed object mIoU by < 0.6);
# * the box CAM normalised over the box: a box says an object is there, so its own peak is
#   the object's;
# * box GrabCut in a window of 5% around the box at <= 144 px, the smallest size that keeps
#   object mIoU at the reference's (F PF 0.7: 71.4 at 160, 71.2 at 144, 70.7 at 128);
# * tag GrabCut at <= 256 px: tags lose far more than boxes at low resolution (PF PB 0.3,
#   whole image: 24.6 at 160 px, 30.3 at 300, 30.2 at full size); 256 keeps tag mode within
#   its latency target (the "quality" configuration uses 300);
# * the image's tags compete for pixels (class_exclusive), and a tag's GrabCut runs in a
#   window 25% larger than its CAM's foreground (class_window_margin);
# * the second-opinion score at 64 px (Spearman rho vs true IoU: boxes 0.417 at 64 px,
#   0.428 at 96; tags 0.454 at both).
DEFAULT = EngineConfig(
    name="default",
    cnn_max_side=320,
    cam_norm="box",
    crop_margin=0.05,
    grabcut_max_side=144,
    class_grabcut_max_side=256,
    score_max_side=64,
    class_exclusive=True,
    class_window_margin=0.25,
    box_technique=Technique("fpf", 0.7),
    class_technique=Technique("pfpb", 0.3),
)
# "quality": slower, better masks, for when an annotator's time costs more than the CPU's:
# GrabCut at <= 300 px for boxes and tags, the score at 96 px (README "Results"). A full-size
# CNN and full-size tag GrabCut were tried and scored lower on tags (33.3 vs 34.7 mIoU).
QUALITY = dataclasses.replace(
    DEFAULT,
    name="quality",
    grabcut_max_side=300,
    class_grabcut_max_side=300,
    score_max_side=96,
)
CONFIGS: dict[str, EngineConfig] = {"reference": REFERENCE, "default": DEFAULT, "quality": QUALITY}


def get_config(name: str) -> EngineConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown engine configuration {name!r}; choose one of {', '.join(CONFIGS)}") from None


@dataclass(frozen=True)
class CnnOutput:
    """What one CNN pass yields and what the evaluator caches: logits and pooled VOC CAMs."""

    logits: np.ndarray  # (1000,) float32
    voc_cams: np.ndarray  # (20, h, w) float32, VOC_CLASSES order, >= 0


@dataclass(frozen=True)
class ClassScore:
    voc_class: str
    probability: float  # softmax mass of the class's ImageNet members


@dataclass
class MaskResult:
    """A binary mask and how it was obtained.

    ``fallback`` names a defined edge case that replaced the requested technique:
    "box_too_small" (box returned filled), "no_cam" (class has no ImageNet counterpart or an
    all-zero CAM; object task fell back to naked GrabCut, class task is empty),
    "cam_no_foreground" (digitized CAM had no foreground in the box: naked GrabCut instead),
    "no_background" (nothing to model the background: the initial mask is returned).
    """

    mask: np.ndarray  # (H, W) bool
    technique: Technique
    score: float
    fallback: str | None = None

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks (1.0 when both are empty)."""
    union = int(np.count_nonzero(a | b))
    return 1.0 if union == 0 else int(np.count_nonzero(a & b)) / union


def pool_voc_cams(cam1000: np.ndarray) -> np.ndarray:
    """(1000, h, w) ImageNet CAM -> (20, h, w) VOC CAMs by max over each class's members."""
    out = np.zeros((len(voc.VOC_CLASSES),) + cam1000.shape[1:], dtype=np.float32)
    for i, name in enumerate(voc.VOC_CLASSES):
        members = voc.imagenet_members(name)
        if members:
            out[i] = cam1000[list(members)].max(axis=0)
    return out


class CamNet:
    """SqueezeNet 1.1 wrapped for numpy images; thread-safe, loads its weights once."""

    def __init__(self, weights: str | None = None, num_threads: int | None = None) -> None:
        self.net: SqueezeNet11
        self.net, self.weights_info = load_squeezenet(weights)
        # Channels-last (NHWC) layout: PyTorch's CPU max-pool is about 7x faster on it, and the
        # whole pass at 320 x 240 drops from 14 to 5 ms on 2 cores (README "Speed"); the CAM
        # differs from NCHW's by float rounding only (< 1e-4).
        self.net = self.net.to(memory_format=torch.channels_last)
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
            img = cv2.resize(img, (max(32, round(img.shape[1] * s)), max(32, round(img.shape[0] * s))), interpolation=cv2.INTER_LINEAR)
        x = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        x = ((x - self._mean) / self._std).contiguous(memory_format=torch.channels_last)
        with self._lock, torch.inference_mode():
            logits, cam = self.net(x)
        return logits[0].numpy().astype(np.float32), np.ascontiguousarray(cam[0].numpy(), dtype=np.float32)

    def run(self, rgb: np.ndarray, max_side: int | None = None) -> CnnOutput:
        logits, cam = self.forward(rgb, max_side)
        return CnnOutput(logits=logits, voc_cams=pool_voc_cams(cam))


def normalise(cam: np.ndarray, region: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, bool]:
    """Divide a non-negative CAM by its max (over ``region`` = (x0, y0, x1, y1) if given).

    Returns (cam in [0, 1], has_evidence). No evidence (max <= 0) gives an all-zero map.
    """
    ref = cam if region is None else cam[region[1] : region[3], region[0] : region[2]]
    peak = float(ref.max()) if ref.size else 0.0
    if not math.isfinite(peak) or peak <= 0.0:
        return np.zeros_like(cam, dtype=np.float32), False
    return np.clip(cam / peak, 0.0, 1.0).astype(np.float32), True


class Segmenter:
    """Set an image once, then segment boxes and classes cheaply (SamPredictor-style).

    >>> seg = Segmenter()
    >>> seg.set_image(rgb)
    >>> seg.segment_box(Box(10, 20, 200, 180), "dog").mask
    """

    def __init__(self, config: EngineConfig = REFERENCE, net: CamNet | None = None, weights: str | None = None,
                 threads: int = 1) -> None:
        """``threads`` > 1 runs the GrabCuts of one call (several boxes, a mask and its second
        opinion) concurrently: OpenCV releases the GIL inside cv2.grabCut. Masks do not depend on
        it (each GrabCut seeds its own thread's RNG). Leave it at 1 where processes already
        share the cores (the evaluator's workers)."""
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self.config = config
        self.threads = threads
        self.net = net or CamNet(weights)
        self._image: np.ndarray | None = None
        self._cnn: CnnOutput | None = None
        self._upsampled: dict[int, np.ndarray] = {}

    # -- image -------------------------------------------------------------------------------
    def set_image(self, image: np.ndarray, cnn: CnnOutput | None = None) -> CnnOutput:
        """Take an image (any of grey/RGB/RGBA, uint8/uint16/float) and run the CNN once.

        ``cnn`` may carry a cached CNN output for this very image (the evaluator's cache).
        """
        self._image = to_rgb_uint8(image)
        self._cnn = cnn if cnn is not None else self.net.run(self._image, self.config.cnn_max_side)
        self._upsampled = {}
        return self._cnn

    @property
    def image(self) -> np.ndarray:
        if self._image is None:
            raise RuntimeError("call set_image() first")
        return self._image

    @property
    def cnn(self) -> CnnOutput:
        if self._cnn is None:
            raise RuntimeError("call set_image() first")
        return self._cnn

    def class_probabilities(self) -> list[ClassScore]:
        """VOC classes ranked by the softmax mass of their ImageNet members."""
        z = self.cnn.logits.astype(np.float64)
        p = np.exp(z - z.max())
        p /= p.sum()
        scores = [ClassScore(n, float(p[list(voc.imagenet_members(n))].sum()) if voc.imagenet_members(n) else 0.0) for n in voc.VOC_CLASSES]
        return sorted(scores, key=lambda s: -s.probability)

    def predict_classes(self, min_probability: float = 0.2, top_k: int = 3) -> list[ClassScore]:
        """The CNN's own guess of the VOC classes present (the report's "prediction")."""
        return [s for s in self.class_probabilities()[:top_k] if s.probability >= min_probability]

    def raw_class_cam(self, voc_class: str) -> np.ndarray:
        """The VOC class's CAM upsampled to the image size, not normalised (>= 0)."""
        i = voc.voc_index(voc_class) - 1
        if i not in self._upsampled:
            h, w = self.image.shape[:2]
            self._upsampled[i] = cv2.resize(self.cnn.voc_cams[i], (w, h), interpolation=cv2.INTER_LINEAR).clip(min=0)
        return self._upsampled[i]

    def class_cam(self, voc_class: str, region: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, bool]:
        return normalise(self.raw_class_cam(voc_class), region)

    # -- object task -------------------------------------------------------------------------
    def segment_box(
        self,
        box: Box,
        voc_class: str | None = None,
        technique: Technique | None = None,
        seeds: Seeds | None = None,
        quality: bool = False,
    ) -> MaskResult:
        """Binary mask of the object in ``box``; ``voc_class`` is needed by the CAM techniques.

        ``seeds`` (clicks, brush strokes) are hard constraints inside the box. With
        ``quality=True`` the result's score is the second-opinion agreement (see
        :meth:`_second_opinion`), which costs one more GrabCut.
        """
        res = self.segment_boxes([BoxPrompt(box, voc_class, technique, seeds)], quality)[0]
        if isinstance(res, Exception):
            raise res
        return res

    def segment_boxes(self, prompts: Sequence[BoxPrompt], quality: bool = False) -> list[MaskResult | Exception]:
        """Masks of several boxes of the image, run concurrently with ``threads`` > 1.

        One entry per prompt, in order: its MaskResult, or the exception it raised (a BoxError
        for a box outside the image, a ValueError for an unknown class), so one bad box never
        sinks the others.
        """
        jobs: list[Callable[[], MaskResult]] = []
        seconds: list[Callable[[], MaskResult] | None] = []
        for p in prompts:
            jobs.append(lambda p=p: self._segment_box(p.box, p.voc_class, p.technique, p.seeds))
            alt = self._second_opinion(p.technique or self.config.box_technique, p.voc_class is not None, task="object")
            seconds.append(None if not quality or alt is None else
                           lambda p=p, alt=alt: self._segment_box(p.box, p.voc_class, alt, p.seeds, score=True))
        return self._run_scored(jobs, seconds, unscored="box_too_small")

    def _run_scored(self, jobs: Sequence[Callable[[], MaskResult]], seconds: Sequence[Callable[[], MaskResult] | None],
                    unscored: str) -> list[MaskResult | Exception]:
        """Run every prompt's mask job and its second opinion (None: none) at once; a mask's
        score becomes its IoU with the second opinion, except after fallback ``unscored``."""
        extra = [j for j in seconds if j is not None]
        done = self._run(list(jobs) + extra)
        out: list[MaskResult | Exception] = []
        k = len(jobs)
        for res, second in zip(done[: len(jobs)], seconds):
            if second is None:
                out.append(res)
                continue
            alt_res, k = done[k], k + 1
            if isinstance(res, MaskResult) and res.fallback != unscored:
                if isinstance(alt_res, Exception):
                    raise alt_res  # the same prompt succeeded with the main technique: a bug, not bad input
                res.score = mask_iou(res.mask, alt_res.mask)
            out.append(res)
        return out

    def _run(self, jobs: Sequence[Callable[[], _T]]) -> list[_T | Exception]:
        """Run jobs (in the pool when threads > 1); a job's exception is returned in its place."""
        def guarded(job: Callable[[], _T]) -> _T | Exception:
            try:
                return job()
            except Exception as exc:  # handed back to the caller, who decides per prompt
                return exc

        if self.threads <= 1 or len(jobs) <= 1:
            return [guarded(j) for j in jobs]
        return list(_cut_pool(self.threads).map(guarded, jobs))

    def _side(self, task: str, score: bool) -> int | None:
        """GrabCut resolution for a box ("object") or whole-image ("class") cut, or its score."""
        if score and self.config.score_max_side is not None:
            return self.config.score_max_side
        return self.config.grabcut_max_side if task == "object" else self.config.class_grabcut_max_side

    def _segment_box(self, box: Box, voc_class: str | None, technique: Technique | None, seeds: Seeds | None,
                     score: bool = False) -> MaskResult:
        tech = technique or self.config.box_technique
        img = self.image
        h, w = img.shape[:2]
        x0, y0, x1, y1 = box.clip(w, h)
        if tech.kind != "grabcut" and voc_class is None:
            raise ValueError(f"technique {tech.label!r} needs a class for the box")
        if voc_class is not None:
            voc.voc_index(voc_class)  # unknown names fail here, before any work

        if x1 - x0 < MIN_BOX_SIDE or y1 - y0 < MIN_BOX_SIDE:
            m = np.zeros((h, w), bool)
            m[y0:y1, x0:x1] = True
            return MaskResult(m, tech, score=0.0, fallback="box_too_small")

        init = np.full((h, w), GC_BGD, np.uint8)
        fallback: str | None = None
        cam = None
        evidence = False
        if tech.kind == "grabcut":
            init[y0:y1, x0:x1] = GC_PR_FGD
        else:
            if self.config.box_cam == "image":
                region = None if self.config.cam_norm == "image" else (x0, y0, x1, y1)
                cam, evidence = self.class_cam(voc_class, region)  # type: ignore[arg-type]
            else:
                cam, evidence = self.box_crop_cam((x0, y0, x1, y1), voc_class)  # type: ignore[arg-type]
            inside = digitize(cam[y0:y1, x0:x1], tech.thresholds)  # type: ignore[arg-type]
            if not evidence:
                fallback = "no_cam"
                inside[:] = GC_PR_FGD
            elif tech.kind == "gccam" and not np.any(foreground(inside)):
                fallback = "cam_no_foreground"
                inside[:] = GC_PR_FGD
            init[y0:y1, x0:x1] = inside
            if tech.kind == "cam" and not evidence:  # CAM alone cannot say anything but the box
                init[y0:y1, x0:x1] = GC_PR_FGD

        if seeds is not None and not seeds.is_empty():
            pos, neg = seeds.rasterize(h, w)
            in_box = np.zeros((h, w), bool)
            in_box[y0:y1, x0:x1] = True
            init[pos & in_box] = GC_FGD
            init[neg & in_box] = GC_BGD
        if tech.kind == "cam" and evidence:
            m = foreground(init)
            return MaskResult(m, tech, self._score(m, cam), fallback)
        m, cut_fallback = self._cut(init, self._window(x0, y0, x1, y1), self._side("object", score))
        m[:y0] = False
        m[y1:] = False
        m[:, :x0] = False
        m[:, x1:] = False
        return MaskResult(m, tech, self._score(m, cam), fallback or cut_fallback)

    def box_crop_cam(self, box: tuple[int, int, int, int], voc_class: str) -> tuple[np.ndarray, bool]:
        """CAM from a CNN pass on the box's window (config.box_cam), normalised over the box."""
        h, w = self.image.shape[:2]
        x0, y0, x1, y1 = box
        wx0, wy0, wx1, wy1 = self._window(x0, y0, x1, y1) or (x0, y0, x1, y1)
        crop = self.image[wy0:wy1, wx0:wx1]
        side = self.config.box_cnn_side
        s = side / max(crop.shape[:2])
        sized = cv2.resize(crop, (max(1, round(crop.shape[1] * s)), max(1, round(crop.shape[0] * s))),
                           interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        logits, cam1000 = self.net.forward(sized)
        local = np.zeros(cam1000.shape[1:], np.float32)
        if self.config.box_cam == "crop":
            members = voc.imagenet_members(voc_class)
            if members:
                local = cam1000[list(members)].max(axis=0)
        if self.config.box_cam == "crop_agnostic" or not np.any(local > 0):
            z = logits.astype(np.float64)
            p = np.exp(z - z.max())
            p /= p.sum()
            top = np.argsort(-p)[:5]
            local = np.tensordot(p[top].astype(np.float32), cam1000[top], axes=1)
        full = np.zeros((h, w), np.float32)
        full[wy0:wy1, wx0:wx1] = cv2.resize(local, (wx1 - wx0, wy1 - wy0), interpolation=cv2.INTER_LINEAR).clip(min=0)
        return normalise(full, box)

    # -- class task --------------------------------------------------------------------------
    def segment_class(self, voc_class: str, technique: Technique | None = None, quality: bool = False,
                      others: Sequence[str] = ()) -> MaskResult:
        """Binary mask of every region of ``voc_class`` in the image, from the CAM alone.

        ``quality=True``: the score is the second-opinion agreement (one more GrabCut).
        ``others``: the image's other tags; they compete for pixels when config.class_exclusive.
        """
        res = self.segment_classes([(voc_class, technique)], quality, others)[0]
        if isinstance(res, Exception):
            raise res
        return res

    def segment_classes(self, prompts: Sequence[tuple[str, Technique | None]], quality: bool = False,
                        others: Sequence[str] = ()) -> list[MaskResult | Exception]:
        """Masks of several (class, technique) pairs, run concurrently with ``threads`` > 1; one
        entry per prompt, its MaskResult or the exception it raised (see segment_boxes).

        The image's tags are the prompts' classes plus ``others``; each class competes with the
        rest of them when config.class_exclusive.
        """
        tags = tuple(dict.fromkeys(c for c in [c for c, _ in prompts] + list(others) if _known(c)))
        rivals = {c: tuple(o for o in tags if o != c) for c in tags}
        jobs: list[Callable[[], MaskResult]] = []
        seconds: list[Callable[[], MaskResult] | None] = []
        for cls, tech in prompts:
            jobs.append(lambda cls=cls, tech=tech: self._segment_class(cls, tech, rivals=rivals.get(cls, ())))
            alt = self._second_opinion(tech or self.config.class_technique, True, task="class") if quality else None
            seconds.append(None if alt is None else
                           lambda cls=cls, alt=alt: self._segment_class(cls, alt, score=True, rivals=rivals.get(cls, ())))
        return self._run_scored(jobs, seconds, unscored="no_cam")

    def _segment_class(self, voc_class: str, technique: Technique | None, score: bool = False,
                       rivals: Sequence[str] = ()) -> MaskResult:
        tech = technique or self.config.class_technique
        if tech.kind == "grabcut":
            raise ValueError("naked GrabCut needs a box; the class task uses 'cam' or a GrabCut-CAM variant")
        voc.voc_index(voc_class)
        h, w = self.image.shape[:2]
        cam, evidence = self.class_cam(voc_class)
        if not evidence:
            return MaskResult(np.zeros((h, w), bool), tech, 0.0, "no_cam")
        init = digitize(cam, tech.thresholds)  # type: ignore[arg-type]
        if self.config.class_exclusive and rivals:
            raw = self.raw_class_cam(voc_class)
            lost = np.zeros(raw.shape, bool)
            for other in rivals:  # never voc_class itself (segment_classes leaves it out)
                if voc.imagenet_members(other):
                    lost |= self.raw_class_cam(other) > raw
            init[lost & foreground(init)] = GC_PR_BGD
        if tech.kind == "cam":
            m = foreground(init)
            return MaskResult(m, tech, self._score(m, cam))
        if not has_both_sides(init):
            m = foreground(init)
            return MaskResult(m, tech, self._score(m, cam), "no_background")
        m, fallback = self._cut(init, self._class_window(init), self._side("class", score))
        return MaskResult(m, tech, self._score(m, cam), fallback)

    # -- interactive clicks / strokes without a box ----------------------------------------------
    def segment_seeds(self, seeds: Seeds, voc_class: str | None = None, technique: Technique | None = None) -> MaskResult:
        """Mask from clicks / strokes alone (no box).

        The initial mask is the class task's digitized CAM when a class is given (else all
        probable background), with positive seeds as definite foreground and negative seeds as
        definite background; GrabCut decides the rest. The result keeps only the connected
        regions that touch a positive seed, since a click names one object.
        """
        tech = technique or self.config.class_technique
        h, w = self.image.shape[:2]
        if seeds.is_empty():
            raise ValueError("no clicks or strokes given")
        pos, neg = seeds.rasterize(h, w)
        if not pos.any():
            return MaskResult(np.zeros((h, w), bool), tech, 0.0, "no_positive_seed")
        cam = None
        init = np.full((h, w), GC_PR_BGD, np.uint8)
        if voc_class is not None and tech.kind != "grabcut":
            cam, evidence = self.class_cam(voc_class)
            if evidence:
                init = digitize(cam, tech.thresholds)  # type: ignore[arg-type]
                init[init == GC_BGD] = GC_PR_BGD  # clicks, not the CAM, decide what is certain
                init[init == GC_FGD] = GC_PR_FGD
        init[pos] = GC_FGD
        init[neg] = GC_BGD
        m, fallback = self._cut(init, None, self._side("class", False))
        if fallback:
            return MaskResult(m, tech, self._score(m, cam), fallback)
        n, comp = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        keep = np.unique(comp[pos & m])
        m = np.isin(comp, keep[keep > 0])
        return MaskResult(m, tech, self._score(m, cam))

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _second_opinion(tech: Technique, has_class: bool, task: str) -> Technique | None:
        """The technique whose mask a result is compared with to estimate its quality.

        A mask that a different technique reproduces is more often right: on VOC the IoU
        between the two ranks masks by their true IoU better than the CAM's strength does
        (Spearman's rho in README "Mask scores"). Boxes: naked GrabCut vs the CAM technique;
        tags: F PB 0.5 vs the configured technique. None: no second opinion exists (naked
        GrabCut of a box without a class), the score stays the CAM's (0).
        """
        if task == "object":
            if tech.kind != "grabcut":
                return Technique("grabcut")
            return Technique("fpf", 0.6) if has_class else None
        return Technique("fpb", 0.5) if tech.variant != "fpb" else Technique("pfpb", 0.3)

    def _window(self, x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int] | None:
        """GrabCut window around a box (None = whole image), per ``config.crop_margin``."""
        if self.config.crop_margin is None:
            return None
        h, w = self.image.shape[:2]
        return _grown(x0, y0, x1, y1, self.config.crop_margin, w, h)

    def _class_window(self, init: np.ndarray) -> tuple[int, int, int, int] | None:
        """GrabCut window of a tag (None = whole image), per ``config.class_window_margin``."""
        m = self.config.class_window_margin
        if m is None:
            return None
        ys, xs = np.nonzero(foreground(init))
        if not len(ys):
            return None
        h, w = init.shape
        return _grown(int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1, m, w, h)

    def _cut(self, init: np.ndarray, window: tuple[int, int, int, int] | None,
             max_side: int | None) -> tuple[np.ndarray, str | None]:
        """GrabCut of a full-image initial mask inside ``window``, its longer side at most
        ``max_side`` (None: full resolution).

        Returns (full-size bool mask, fallback). A window with no background sample gets a ring
        of probable background along its border; with too few samples on either side the
        initial mask's own foreground is returned (fallback "no_background").
        """
        h, w = init.shape
        wx0, wy0, wx1, wy1 = window or (0, 0, w, h)
        sub = init[wy0:wy1, wx0:wx1].copy()
        if not np.any((sub == GC_BGD) | (sub == GC_PR_BGD)):
            add_border_background(sub)
        out = np.zeros((h, w), bool)
        if not has_both_sides(sub):
            out[wy0:wy1, wx0:wx1] = foreground(sub)
            return out, "no_background"
        img = self.image[wy0:wy1, wx0:wx1]
        sh, sw = sub.shape
        scale = 1.0 if max_side is None else min(1.0, max_side / max(sh, sw))
        if scale < 1.0:
            size = (max(1, round(sw * scale)), max(1, round(sh * scale)))
            small_img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            small_init = cv2.resize(sub, size, interpolation=cv2.INTER_NEAREST)
            if has_both_sides(small_init):
                small = run_grabcut(small_img, small_init, self.config.grabcut_iterations)
                m = cv2.resize(small.astype(np.float32), (sw, sh), interpolation=cv2.INTER_LINEAR) > 0.5
            else:  # the downscale lost one side: GrabCut at full resolution instead
                m = run_grabcut(img, sub, self.config.grabcut_iterations)
            # Hard labels stay hard at full resolution.
            m[sub == GC_FGD] = True
            m[sub == GC_BGD] = False
        else:
            m = run_grabcut(img, sub, self.config.grabcut_iterations)
        out[wy0:wy1, wx0:wx1] = m
        return out, None

    @staticmethod
    def _score(mask: np.ndarray, cam: np.ndarray | None) -> float:
        """Mean normalised CAM inside the mask (0 with no CAM or an empty mask)."""
        if cam is None or not mask.any():
            return 0.0
        return float(cam[mask].mean())
