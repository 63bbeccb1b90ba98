"""Per-pixel CNN features (hypercolumns) from the same SqueezeNet 1.1 pass that gives the CAM.

Why: OpenCV GrabCut models colour only. SqueezeNet's fire modules already describe every image
region (texture, parts, objectness) at 1/4 (fire2-3), 1/8 (fire4-5) and 1/16 (fire6-9) of the
input, so a per-pixel model fitted on them sees what the CNN sees, without another network.

* :func:`forward_features` runs the network's ``features`` Sequential module by module and keeps
  the outputs of the requested fire modules (a hand-run "hook": no hook is registered on the
  shared module, so concurrent CAM passes in other threads are unaffected), then the classifier.
  Pre-processing is CamNet.forward's, so its logits and CAM are CamNet's own.
* :func:`reduce_layer` reduces each layer to a few dimensions by a per-image PCA at run time
  (training-free: nothing is fitted on labels, nothing shipped). A deterministic randomized
  range finder keeps it at a few ms even for fire9's 512 channels.
* :class:`PixelFeatures` holds the reduced maps and resamples them, bilinearly and in the CAM's
  pixel convention, to the whole image or to any window at any size.

>>> pf = PixelFeatures.of_image(camnet.net, rgb, max_side=320)
>>> pf.stack()                          # (h, w, d) at the finest layer's resolution
>>> pf.window((x0, y0, x1, y1), (w, h))  # (h, w, d) for a window of the image, resized
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from .image import to_rgb_uint8
from .squeezenet import IMAGENET_MEAN, IMAGENET_STD, SqueezeNet11

# Index of each fire module's output inside SqueezeNet11.features (torchvision's layout).
FIRE_INDEX = {"fire2": 3, "fire3": 4, "fire4": 6, "fire5": 7, "fire6": 9, "fire7": 10, "fire8": 11, "fire9": 12}
# Input pixels per feature pixel of each fire module (conv1 stride 2, then three stride-2 pools).
FIRE_STRIDE = {"fire2": 4, "fire3": 4, "fire4": 8, "fire5": 8, "fire6": 16, "fire7": 16, "fire8": 16, "fire9": 16}
DEFAULT_LAYERS = ("fire3", "fire5", "fire9")
DEFAULT_DIMS = 8  # per layer; the outside experiment's choice, set before any run
MAX_FIT_PIXELS = 1024  # pixels the per-image PCA is fitted on (a regular subsample; projection uses all)
PCA_SEED = 0  # start of the subspace iteration: fixed, so features are deterministic
PCA_ITERATIONS = 6
WINDOW_CACHE = 4  # window() answers kept per image (~2 MB each at 160 px; the backend caches 8 images)
# A learned head (model/head.py) needs features that mean the same in every image; the per-image
# PCA does not (its axes follow each image). A fixed, seeded Gaussian projection of the sqrt
# activations does, costs one small matrix product per layer and needs no data to fit.
FIXED_DIMS = 16
FIXED_SEED = 1


@dataclass(frozen=True)
class CnnPass:
    """One SqueezeNet pass: logits, the 1000-class CAM and the kept fire outputs."""

    logits: np.ndarray  # (1000,) float32; (0,) for a pass with ``cam_rows``
    cam: np.ndarray  # (1000, h, w) float32; (len(cam_rows), h, w) for a pass with ``cam_rows``
    layers: dict[str, np.ndarray]  # name -> (c, h_l, w_l) float32
    input_shape: tuple[int, int]  # (h, w) of the image the CNN saw (after resizing)


def cnn_input(rgb: np.ndarray, max_side: int | None) -> np.ndarray:
    """The image as CamNet.forward feeds it: at most ``max_side`` (INTER_AREA), at least 32 px."""
    img = to_rgb_uint8(rgb)
    h, w = img.shape[:2]
    if max_side is not None and max(h, w) > max_side:
        s = max_side / max(h, w)
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    if min(img.shape[:2]) < 32:  # SqueezeNet needs about 17 px to produce a map at all
        s = 32 / min(img.shape[:2])
        size = (max(32, round(img.shape[1] * s)), max(32, round(img.shape[0] * s)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    return img


def forward_features(
    net: SqueezeNet11,
    rgb: np.ndarray,
    max_side: int | None = 320,
    layers: Sequence[str] = DEFAULT_LAYERS,
    cam_rows: Sequence[int] | None = None,
) -> CnnPass:
    """Run SqueezeNet once on ``rgb`` and return logits, CAM and the named fire outputs.

    ``cam_rows``: the CAM of these ImageNet classes only, in this order, and no logits (an empty
    array): the classifier's 1x1 conv on those output channels alone gives the same values as the
    full conv, bit for bit (checked on VOC images with 1 and 2 torch threads; tests/test_tagprop.py)."""
    unknown = [n for n in layers if n not in FIRE_INDEX]
    if unknown:
        raise ValueError(f"unknown layers {unknown}; choose from {', '.join(FIRE_INDEX)}")
    img = cnn_input(rgb, max_side)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    x = torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
    want = {FIRE_INDEX[n]: n for n in layers}
    kept: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for i, module in enumerate(net.features):
            x = module(x)
            if i in want:
                kept[want[i]] = np.ascontiguousarray(x[0].numpy(), dtype=np.float32)
        if cam_rows is None:
            cam = net.classifier[2](net.classifier[1](net.classifier[0](x)))
            logits = torch.flatten(net.classifier[3](cam), 1)[0].numpy().astype(np.float32)
        else:
            conv, rows = net.classifier[1], torch.as_tensor(list(cam_rows), dtype=torch.long)
            assert isinstance(conv, torch.nn.Conv2d) and conv.bias is not None
            weight, bias = conv.weight[rows].contiguous(), conv.bias[rows].contiguous()
            cam = net.classifier[2](torch.nn.functional.conv2d(net.classifier[0](x), weight, bias))
            logits = np.zeros(0, np.float32)
    return CnnPass(
        logits,
        np.ascontiguousarray(cam[0].numpy(), dtype=np.float32),
        kept,
        (img.shape[0], img.shape[1]),
    )


def reduce_layer(fmap: np.ndarray, dims: int = DEFAULT_DIMS) -> np.ndarray:
    """(c, h, w) activations -> (dims, h, w): per-image PCA, unit total variance.

    sqrt first: ReLU activations are heavy-tailed, and a few saturated channels would otherwise
    own the leading components. Each component's sign is fixed (largest loading positive) and
    the layer is scaled to unit total variance of its kept components, so layers weigh alike.
    The linear algebra runs in torch, whose thread count the engine sets: numpy's OpenBLAS
    spins up every core per call, and on a busy 2-core machine that made a 128 x 128
    eigendecomposition 40x slower (182 vs 5 ms).
    """
    c, h, w = fmap.shape
    x = torch.from_numpy(np.ascontiguousarray(fmap)).reshape(c, -1).T.clamp(min=0).sqrt()  # (n, c)
    x = x - x.mean(dim=0)
    k = min(dims, c, x.shape[0])
    out = np.zeros((dims, h, w), np.float32)
    if k < 1 or not bool(x.abs().max() > 0):
        return out
    # Fit on at most MAX_FIT_PIXELS pixels on a regular grid (deterministic), project all.
    step = max(1, int(np.ceil(x.shape[0] / MAX_FIT_PIXELS)))
    xs = x[::step]
    cov = xs.T @ xs  # (c, c)
    # Subspace iteration for the leading k eigenvectors, then Rayleigh-Ritz: a full
    # eigendecomposition of fire9's 512 x 512 covariance costs 10x more, for components we drop.
    gen = torch.Generator().manual_seed(PCA_SEED)
    q = torch.randn(c, min(c, k + 6), generator=gen)
    for _ in range(PCA_ITERATIONS):
        q = torch.linalg.qr(cov @ q)[0]
    evals, v = torch.linalg.eigh((q.T @ cov @ q).double())
    comps = (q.double() @ v[:, -k:].flip(1)).T.float()  # (k, c), leading first
    var = evals[-k:].flip(0).clamp(min=0)
    signs = torch.sign(comps.gather(1, comps.abs().argmax(dim=1, keepdim=True)))
    comps = comps * torch.where(signs == 0, torch.ones_like(signs), signs)
    proj = x @ comps.T.float()  # (n, k)
    total = float((var.sum() / xs.shape[0]).sqrt())
    out[:k] = (proj / max(total, 1e-12)).T.reshape(k, h, w).numpy()
    return out


def project_fixed(fmap: np.ndarray, dims: int = FIXED_DIMS) -> np.ndarray:
    """(c, h, w) activations -> (dims, h, w): sqrt, then a fixed random projection (seeded per
    channel count, so the same layer is projected alike in every image and every process)."""
    c, h, w = fmap.shape
    gen = torch.Generator().manual_seed(FIXED_SEED * 100003 + c)
    r = torch.randn(c, dims, generator=gen) / float(np.sqrt(c))
    x = torch.from_numpy(np.ascontiguousarray(fmap)).reshape(c, -1).T.clamp(min=0).sqrt()
    return (x @ r).T.reshape(dims, h, w).numpy().astype(np.float32)


@dataclass(frozen=True)
class PackedLayer:
    """One ReLU layer's (c, h, w) float32 activations, stored losslessly: one bit per value (zero
    or not, bitwise, so -0.0 stays a value) and the nonzero values in order. On VOC images 61% /
    74% / 93% of fire3 / fire5 / fire9 are 0, so an image's three layers take 1.4 instead of 4.0 MB
    (2007_000039); the backend's ImageCache keeps 8 images. Packing and unpacking cost about 4 ms
    of CPU per image each, against 60 ms for the CNN pass the cache saves."""

    shape: tuple[int, ...]
    bits: np.ndarray  # np.packbits of the nonzero flags, C order
    values: np.ndarray  # (nonzeros,) float32

    @classmethod
    def of(cls, a: np.ndarray) -> PackedLayer:
        a = np.ascontiguousarray(a, dtype=np.float32)
        nz = a.view(np.uint32) != 0
        return cls(a.shape, np.packbits(nz), a[nz])

    def unpack(self) -> np.ndarray:
        """The layer exactly as packed (the same bits)."""
        n = int(np.prod(self.shape))
        out = np.zeros(n, np.float32)
        out[np.unpackbits(self.bits, count=n).view(bool)] = self.values
        return out.reshape(self.shape)

    @property
    def nbytes(self) -> int:
        return int(self.bits.nbytes + self.values.nbytes)


class _Sampler:
    """``window()`` over a dict of maps (the fixed projection of :class:`PixelFeatures`)."""

    def __init__(self, maps: dict[str, np.ndarray], image_shape: tuple[int, int]) -> None:
        self.maps, self.image_shape = maps, image_shape

    def window(self, window: tuple[int, int, int, int] | None, size: tuple[int, int]) -> np.ndarray:
        return np.concatenate([resample(m, self.image_shape, window, size) for m in self.maps.values()], axis=2)


def _interp_matrix(n_out: int, n_in: int, start: float, length: float, full: float) -> np.ndarray:
    """(n_out, n_in) bilinear weights sampling a map of ``n_in`` pixels that spans ``full`` image
    pixels, at ``n_out`` evenly spaced pixel centres of the image interval [start, start+length).

    The convention is cv2.resize's (pixel centres at +0.5), the one the engine uses for the CAM,
    with the border replicated.
    """
    centres = start + (np.arange(n_out) + 0.5) * (length / n_out)  # image coordinates
    pos = np.clip(centres * (n_in / full) - 0.5, 0.0, n_in - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = pos - lo
    m = np.zeros((n_out, n_in), np.float32)
    np.add.at(m, (np.arange(n_out), lo), 1.0 - frac)
    np.add.at(m, (np.arange(n_out), hi), frac)
    return m


def resample(
    maps: np.ndarray, image_shape: tuple[int, int], window: tuple[int, int, int, int] | None, size: tuple[int, int]
) -> np.ndarray:
    """(d, mh, mw) maps covering an image of ``image_shape`` (h, w) -> (h_out, w_out, d) for
    ``window`` = (x0, y0, x1, y1) (None: the whole image) at ``size`` = (w_out, h_out)."""
    d, mh, mw = maps.shape
    hh, ww = image_shape
    x0, y0, x1, y1 = window or (0, 0, ww, hh)
    ry = torch.from_numpy(_interp_matrix(size[1], mh, y0, y1 - y0, hh))
    rx = torch.from_numpy(_interp_matrix(size[0], mw, x0, x1 - x0, ww))
    # Two small matmuls in torch (its thread count set by the engine): numpy's einsum went
    # through OpenBLAS, which spins up every core per call; it was half of a click's CPU time.
    m = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))
    out = ry @ (m @ rx.T)  # (d, h_out, w_out)
    return np.ascontiguousarray(out.permute(1, 2, 0).numpy())


@dataclass
class PixelFeatures:
    """Reduced hypercolumn maps of one image, resampled on demand.

    ``maps[name]`` is (dims, h_l, w_l) at the layer's own resolution; all cover the whole image
    of ``image_shape`` (h, w). ``logits`` and ``cam`` come from the same pass. Made by
    :meth:`of_image`, the maps are reduced on first use, not in the pass: a box answered by
    colour models alone (featcut's box unary) never reads them, and the per-image PCA was 40% of
    the pass's CPU. ``raw`` keeps the pass's layers for that, and for the tag propagation
    (model/tagprop.py), which reads fire3 / fire5 from the same pass instead of running its own.
    Once the image is set, :meth:`pack` stores them as :class:`PackedLayer` and drops the
    1000-class ``cam`` (the Segmenter has pooled it): what a cache of these keeps per image.
    """

    _maps: dict[str, np.ndarray]  # {} until reduced, when ``raw`` is given
    image_shape: tuple[int, int]
    logits: np.ndarray
    cam: np.ndarray | None  # (1000, h16, w16); None once packed
    # window() answers kept per (window, size): an interactive session asks for one box's
    # window at every click (SamPredictor style: the image's work once, cheap calls per prompt).
    _windows: dict[tuple, np.ndarray] = field(default_factory=dict, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
    fixed: dict[str, np.ndarray] = field(default_factory=dict)  # project_fixed maps (a learned head's)
    # (c, h_l, w_l) per layer, a PackedLayer once packed: read them through raw_layer / raw
    _raw: dict[str, np.ndarray | PackedLayer] = field(default_factory=dict, repr=False, compare=False)
    input_shape: tuple[int, int] | None = None  # (h, w) the CNN saw
    dims_per_layer: int = DEFAULT_DIMS

    @classmethod
    def of_image(
        cls,
        net: SqueezeNet11,
        rgb: np.ndarray,
        max_side: int | None = 320,
        layers: Sequence[str] = DEFAULT_LAYERS,
        dims: int = DEFAULT_DIMS,
        fixed_dims: int = 0,
    ) -> PixelFeatures:
        """One CNN pass at ``max_side`` (as CamNet at that size); each layer is PCA-reduced to
        ``dims`` when first read (and, with ``fixed_dims``, projected by :func:`project_fixed` now)."""
        p = forward_features(net, rgb, max_side, layers)
        h, w = np.asarray(rgb).shape[:2]
        fixed = {n: project_fixed(p.layers[n], fixed_dims) for n in layers} if fixed_dims > 0 else {}
        return cls({}, (h, w), p.logits, p.cam, fixed, _raw=dict(p.layers), input_shape=p.input_shape, dims_per_layer=dims)

    def raw_layer(self, name: str) -> np.ndarray | None:
        """The pass's (c, h_l, w_l) output of layer ``name`` (None if not kept), unpacked if packed."""
        a = self._raw.get(name)
        return a.unpack() if isinstance(a, PackedLayer) else a

    @property
    def raw(self) -> dict[str, np.ndarray]:
        """Every kept layer of the pass, unpacked (a copy per call once packed)."""
        return {n: a for n in self._raw if (a := self.raw_layer(n)) is not None}

    def pack(self) -> None:
        """Keep the raw layers packed (:class:`PackedLayer`, the same values bit for bit) and drop
        the 1000-class CAM. The Segmenter calls this once it has pooled the CAM and handed fire3 /
        fire5 to the tag path: from then on only the PCA (on the first click) reads the layers."""
        with self._lock:
            self._raw = {n: a if isinstance(a, PackedLayer) else PackedLayer.of(a) for n, a in self._raw.items()}
            self.cam = None

    @property
    def maps(self) -> dict[str, np.ndarray]:
        if not self._maps and self._raw:
            with self._lock:  # a request's boxes are cut by several threads at once: reduce once
                if not self._maps:
                    self._maps = {n: reduce_layer(m, self.dims_per_layer) for n, m in self.raw.items()}
        return self._maps

    def fixed_sampler(self) -> _Sampler | None:
        """The fixed projection as a window sampler (None when not computed)."""
        return _Sampler(self.fixed, self.image_shape) if self.fixed else None

    @property
    def dims(self) -> int:
        return sum(m.shape[0] for m in self.maps.values())

    def native_shape(self) -> tuple[int, int]:
        """(h, w) of the finest layer: the CNN's own resolution for these features."""
        return max((m.shape[1:] for m in self.maps.values()), key=lambda s: s[0] * s[1])

    def stack(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """Whole-image features (h, w, d) at ``size`` = (w, h), default the finest layer's."""
        if size is None:
            nh, nw = self.native_shape()
            size = (nw, nh)
        return self.window(None, size)

    def window(self, window: tuple[int, int, int, int] | None, size: tuple[int, int]) -> np.ndarray:
        """Features (h_out, w_out, d) of ``window`` = (x0, y0, x1, y1) in image pixels, resampled
        to ``size`` = (w_out, h_out); layers concatenated in ``maps`` order."""
        if size[0] < 1 or size[1] < 1:
            raise ValueError(f"size must be positive, got {size}")
        key = (window, tuple(size))
        hit = self._windows.get(key)
        if hit is not None:
            return hit
        out = np.concatenate([resample(m, self.image_shape, window, size) for m in self.maps.values()], axis=2)
        out.flags.writeable = False  # shared by every later call for this window: nobody may change it
        with self._lock:  # a request's boxes are cut by several threads at once
            if len(self._windows) >= WINDOW_CACHE:
                self._windows.pop(next(iter(self._windows)))  # oldest first (dicts keep insertion order)
            self._windows[key] = out
        return out


__all__ = [
    "CnnPass",
    "DEFAULT_LAYERS",
    "PackedLayer",
    "FIRE_INDEX",
    "FIRE_STRIDE",
    "PixelFeatures",
    "cnn_input",
    "forward_features",
    "project_fixed",
    "reduce_layer",
    "resample",
]
