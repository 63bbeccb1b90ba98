"""The cut seam: turn an image window and a 4-valued initial mask into a binary mask.

A :class:`Cut` is one algorithm (today OpenCV GrabCut, :class:`GrabCutCut`); it sees only the
window it is asked to cut, at the resolution it is given. :func:`windowed_cut` does what every
algorithm needs around it: crop the window, add a background ring when the window has no
background sample, downscale (keeping hard labels hard), upsample the result, and fall back
to the initial mask when one side has too few samples.

A second algorithm is a subclass of :class:`Cut` registered in :data:`CUTS` under the name an
:class:`~model.config.EngineConfig` selects with its ``cut`` field.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from .grabcut import add_border_background, foreground, has_both_sides, run_grabcut
from .techniques import GC_BGD, GC_FGD, GC_PR_BGD

if TYPE_CHECKING:
    from .config import EngineConfig

Window = tuple[int, int, int, int]  # (x0, y0, x1, y1), half-open, in image pixels

# A cut window around a box keeps at least this many pixels of context on each side.
CROP_MIN_PX = 8


@dataclass
class CutReport:
    """What a cut says of its own answer, filled in by the cut (a field stays None where it cannot)."""

    # The mean foreground probability the cut's own per-image unary gives the answer's pixels
    # inside the box: how sure the cut is of what it kept (featcut; GrabCut keeps its GMMs to itself).
    confidence: float | None = None


@dataclass(frozen=True)
class CutInputs:
    """Per-pixel inputs beyond colour that a richer cut may use (GrabCut uses none).

    Each array is (H, W, ...) in the coordinates of the array it accompanies: the full image
    when handed to :func:`windowed_cut`, which crops and resizes every one of them like the
    image before the cut sees it.
    """

    cam: np.ndarray | None = None  # (H, W) float32 normalised CAM of the prompt's class
    # Hypercolumns: anything with ``window(window, (w, h)) -> (h, w, d)`` (model.features.
    # PixelFeatures), resampled straight to the cut's window and size: a full-resolution
    # (H, W, d) array would cost more to build than the cut itself.
    features: WindowSampler | np.ndarray | None = None  # a BoundSampler (or array) once fitted to a window
    previous: np.ndarray | None = None  # (H, W) float32 in [0, 1]: the mask answered last
    # Whether away from the clicks the answer may lean on ``previous`` (featcut's keep_far): yes for
    # an answer from a box, no for the rough first answer of clicks alone.
    keep_previous: bool = True
    # Clicks (x, y, positive) in the accompanying array's pixels, oldest first.
    points: tuple[tuple[float, float, bool], ...] = ()
    # A learned per-project head (model/head.py ``HeadHook``, passed through untouched) and the
    # cross-image features it reads (a WindowSampler, resampled like ``features``). None: the
    # training-free cut.
    head: Any = None
    head_features: WindowSampler | np.ndarray | None = None
    report: CutReport | None = None  # filled in by the cut (passed through untouched); None: nobody asks
    # The cut is a mask's second opinion, whose only use is its agreement with the mask (the
    # score): a cut may spend less on it (featcut's score_gmm_iterations).
    score: bool = False


class WindowSampler(Protocol):
    def window(self, window: Window | None, size: tuple[int, int]) -> np.ndarray: ...


class Cut(ABC):
    """One segmentation algorithm behind the engine's masks."""

    @property
    def hard_cam_peak(self) -> bool:
        """Whether a box's definite CAM foreground (F PF's F) is sent as GC_FGD, a hard label
        kept hard at full resolution; False: the Segmenter sends it as probable foreground."""
        return True

    @abstractmethod
    def cut(self, image: np.ndarray, init: np.ndarray, extras: CutInputs | None = None) -> np.ndarray:
        """Binary (H, W) mask of ``image`` ((H, W, 3) uint8 RGB) from ``init`` ((H, W) uint8,
        values cv2.GC_BGD / GC_FGD / GC_PR_BGD / GC_PR_FGD).

        The caller guarantees ``has_both_sides(init)``. The same input must give the same mask.
        """

    @property
    def version_key(self) -> str:
        """The settings of the algorithm that change masks beyond the EngineConfig's fields (joined
        to ``EngineConfig.version_key``, so the model version follows them); "" when there are none."""
        return ""


@dataclass(frozen=True)
class GrabCutCut(Cut):
    """OpenCV GrabCut (GC_INIT_WITH_MASK), seeded so that masks are deterministic."""

    iterations: int = 1

    def cut(self, image: np.ndarray, init: np.ndarray, extras: CutInputs | None = None) -> np.ndarray:
        return run_grabcut(image, init, self.iterations)


def _featcut(config: EngineConfig) -> Cut:
    from .featcut import FeatCutCut  # imported on use: model.featcut subclasses Cut from here

    return FeatCutCut()


# Registry: name (EngineConfig.cut) -> how to build the cut from the configuration.
CUTS: dict[str, Callable[[EngineConfig], Cut]] = {
    "grabcut": lambda config: GrabCutCut(config.grabcut_iterations),
    "featcut": _featcut,
}


def make_cut(config: EngineConfig) -> Cut:
    try:
        factory = CUTS[config.cut]
    except KeyError:
        raise ValueError(f"unknown cut {config.cut!r}; choose one of {', '.join(CUTS)}") from None
    return factory(config)


def grown_window(x0: int, y0: int, x1: int, y1: int, margin: float, width: int, height: int) -> Window:
    """A box grown by ``margin`` of its size on each side (at least CROP_MIN_PX), clipped."""
    mx = max(CROP_MIN_PX, int(round(margin * (x1 - x0))))
    my = max(CROP_MIN_PX, int(round(margin * (y1 - y0))))
    return max(0, x0 - mx), max(0, y0 - my), min(width, x1 + mx), min(height, y1 + my)


@dataclass(frozen=True)
class BoundSampler:
    """A sampler's features for one cut window, fetched (at the size the cut asks for) only when
    the cut reads them: resampling (and, for PixelFeatures, the first PCA) is wasted on a cut that
    does not (featcut's box answer models colour alone). ``window(None, size)`` is that window."""

    source: WindowSampler
    region: Window  # the cut window, in the source's image pixels

    def window(self, window: Window | None, size: tuple[int, int]) -> np.ndarray:
        if window is not None:  # the cut asks for its whole window; nothing reads a part of it
            raise ValueError("a BoundSampler is bound to one window: ask for window None")
        return self.source.window(self.region, size)


def _fit_extras(extras: CutInputs | None, window: Window, size: tuple[int, int] | None) -> CutInputs | None:
    """Crop every array of ``extras`` to ``window`` and resize it to ``size`` (w, h) if given."""
    if extras is None:
        return None
    x0, y0, x1, y1 = window
    out_size = size or (x1 - x0, y1 - y0)
    sx, sy = out_size[0] / (x1 - x0), out_size[1] / (y1 - y0)
    changes: dict[str, Any] = {}
    for f in fields(extras):
        a = getattr(extras, f.name)
        if f.name in ("head", "report") or isinstance(a, bool):  # passed through untouched
            continue
        if f.name == "points":
            changes[f.name] = tuple(((x - x0) * sx, (y - y0) * sy, positive) for x, y, positive in a)
        elif isinstance(a, np.ndarray):
            a = a[y0:y1, x0:x1]
            changes[f.name] = a if size is None else cv2.resize(a, size, interpolation=cv2.INTER_LINEAR)
        elif a is not None:  # a WindowSampler: read when the cut needs it
            changes[f.name] = BoundSampler(a, window)
    return replace(extras, **changes)


def windowed_cut(
    cut: Cut, image: np.ndarray, init: np.ndarray, window: Window | None, max_side: int | None, extras: CutInputs | None = None
) -> tuple[np.ndarray, str | None]:
    """``cut`` of a full-image initial mask inside ``window`` (None: the whole image), its longer
    side at most ``max_side`` (None: full resolution).

    Returns (full-size bool mask, fallback). A window with no background sample gets a ring
    of probable background along its border; with too few samples on either side the
    initial mask's own foreground is returned (fallback "no_background").
    """
    h, w = init.shape
    wx0, wy0, wx1, wy1 = win = window or (0, 0, w, h)
    sub = init[wy0:wy1, wx0:wx1].copy()
    if not np.any((sub == GC_BGD) | (sub == GC_PR_BGD)):
        add_border_background(sub)
    out = np.zeros((h, w), bool)
    if not has_both_sides(sub):
        out[wy0:wy1, wx0:wx1] = foreground(sub)
        return out, "no_background"
    img = image[wy0:wy1, wx0:wx1]
    sh, sw = sub.shape
    scale = 1.0 if max_side is None else min(1.0, max_side / max(sh, sw))
    if scale < 1.0:
        size = (max(1, round(sw * scale)), max(1, round(sh * scale)))
        small_img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        small_init = cv2.resize(sub, size, interpolation=cv2.INTER_NEAREST)
        if has_both_sides(small_init):
            small = cut.cut(small_img, small_init, _fit_extras(extras, win, size))
            m = cv2.resize(small.astype(np.float32), (sw, sh), interpolation=cv2.INTER_LINEAR) > 0.5
        else:  # the downscale lost one side: cut at full resolution instead
            m = cut.cut(img, sub, _fit_extras(extras, win, None))
        # Hard labels stay hard at full resolution.
        m[sub == GC_FGD] = True
        m[sub == GC_BGD] = False
    else:
        m = cut.cut(img, sub, _fit_extras(extras, win, None))
    out[wy0:wy1, wx0:wx1] = m
    return out, None
