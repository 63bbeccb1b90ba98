"""tagprop: the CAMs of an image's tags spread over each object's extent by a random walk on
SqueezeNet's own features, with background as a label of its own; today's tag masks are then
gated by the propagated shares.

Why: the class task's GrabCut masks come from the coarse 1/16 CAM and 80% of their error is
false positives. Measured on VOC (tools/experiments/tags_prop.py, /work/notes/tags-results.md):

1. **Scores.** Each tag's raw CAM is resampled to a grid at 1/``grid`` of the CNN input and
   divided by its maximum; with ``scales`` (the featcut preset: 1.5) the CAMs of one more pass
   at that multiple of the CNN input's side are averaged in the same way (the multi-scale CAM
   of weakly supervised segmentation: at 480 px the network sees the object larger and its CAM
   covers more of it; 38.0 vs 37.3 tag mIoU, a gain on all four halves, README "The feature
   cut"). Background starts as (1 - max tag score)^alpha (AffinityNet's background, Ahn & Kwak
   2018): "no tag sees anything here".
2. **Propagation.** A random walk on a feature graph spreads the scores over each object's
   extent. The affinity between grid cells within ``radius`` is the cosine similarity of their
   L2-normalised hypercolumns (fire3 + fire5 of the CAM's own pass, or with ``walk_scaled``,
   featcut's, of the first pass at ``scales``, on that pass's grid) raised to ``beta``. The
   scores are multiplied ``steps`` times by the row-normalised affinity matrix, and each is
   divided by its maximum. Nothing is trained: the affinity is the ImageNet network's notion of
   "same stuff".
3. **Shares.** Upsampled to the image, each label's share of the summed scores.
4. **Gate.** A tag's mask = today's mask (GrabCut from the CAM) where the tag's share is at
   least ``keep`` (with ``keep_rel``, featcut: at least that fraction of the tag's peak share
   too), plus every pixel where its share is at least ``add``. GrabCut knows colour
   edges, the walk knows which regions the network groups with the CAM's peak; each vetoes
   the other's confident mistakes. (A multi-label Potts cut and per-image feature models on
   the shares, the same cut with today's masks in its unary, per-tag colour GMMs fitted to the
   confident shares, and a background fed by non-VOC ImageNet CAMs were measured and scored
   lower: README "The feature cut", tools/experiments/tags_bg.py.)
5. **Fallback** (``fallback``, featcut: 0.5). The shares sum to one over K + 1 labels, so with
   several tags they dilute: on 2007_000648 (aeroplane, bus, car, person) no share reaches 0.3
   and the gate left bus, car and person empty (33 of the 347 present tags of the 205 images,
   1 with the fallback and walk_scaled; 77 of 1186 answers in the quiet bench). A tag the gate
   leaves empty gets its best evidence instead: today's mask where the tag is the label with
   the largest share, else its CAM at least ``fallback`` of its peak where it is that label,
   else that CAM region alone. Only a tag whose own cut ran gets it (the caller's ``cut_ran``):
   where every pixel of its CAM's foreground is lost to a rival's stronger CAM
   ("no_background"; the dog photo 2007_000063 tagged dog, sheep) the rival explains the
   evidence and the answer stays empty (tools/experiments/tags_empty.py).

6. **Re-cut** (the Segmenter's ``class_tag_recut``, featcut): the answer of 4./5. is re-cut by
   the box core on its bounding box with that answer as the cut's previous mask
   (model/segmenter.py ``Segmenter._recut_tag``): the gate trims GrabCut's spill only where the
   shares are weak, the box core re-fits colour inside the box the answer spans.

Deterministic (no randomness anywhere). A tag whose CAM is all zero has zero score and share
everywhere, so its mask stays today's (empty, fallback "no_cam").
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from . import voc
from .cnn import VOC_ROWS, CnnOutput, pool_voc_cams
from .features import forward_features
from .squeezenet import SqueezeNet11


@dataclass(frozen=True)
class TagParams:
    """Every setting of the tag path; how each was chosen is in /work/notes/tags-results.md."""

    grid: int = 8  # propagation grid: CNN-input pixels per cell (fire5's own stride)
    cam_context: bool = False  # the CAMs pool each class's context classes too (EngineConfig.cam_context)
    radius: int = 4  # affinity neighbourhood, in cells (6 scored the same and costs twice as much)
    beta: float = 8.0  # affinity = cos^beta (AffinityNet's exponent)
    steps: int = 16  # random-walk steps
    alpha: float = 4.0  # background = (1 - max tag score)^alpha before propagation
    keep: float = 0.3  # today's mask pixel survives where the tag's share is at least this
    add: float = 0.5  # a pixel joins the tag where its share is a majority
    # CAMs of more passes at these multiples of the CNN input's longer side, averaged with the
    # first pass's (each divided by its maximum); () = the first pass alone. 1.5 gained on all
    # four halves; 0.5 lost 4 points, 2 lost on half A, a flipped pass added nothing over 1.5.
    scales: tuple[float, ...] = ()
    # A tag the gate leaves empty answers its best evidence (module docstring, 5.): its CAM at
    # least this fraction of its peak is the last resort; None = no fallback (empty stays empty).
    # 0.3 / 0.5 / 0.7 scored 38.1 / 38.3 / 38.2 vs 38.0 on the cached records (0.3 lost on halves A
    # and B); through the engine 38.3 vs 38.0 (README "The feature cut", tools/experiments/tags_empty*.py).
    fallback: float | None = None
    # Walk on the grid (1/grid of its input) and fire3 / fire5 of the first pass at ``scales``
    # instead of the first pass's: 2.25x the cells at 1.5x, finer object edges; 38.9 vs 38.3 through
    # the engine, a gain on all four halves, + 33 ms CPU (README "The feature cut"); radius 4 cells
    # (6 lost). False: the first pass's grid and features.
    walk_scaled: bool = False
    # The keep gate relative to the tag's own evidence: today's mask survives where the share is at
    # least max(keep, keep_rel x the tag's peak share in the image), so a tag the walk sees
    # strongly (peak share near 1) sheds the GrabCut pixels it holds only weakly, while a diluted
    # tag (peak <= keep / keep_rel) keeps the absolute gate. None = keep alone. 0.4 / 0.5 / 0.6
    # of the peak: 39.2 / 39.2 / 38.7 vs 38.9 on the engine's records (0.6 lost on half O), 0.5
    # (half the peak, as the fallback) chosen (README "The feature cut", tools/experiments/tags_zoom.py).
    keep_rel: float | None = None


def _l2n(f: np.ndarray) -> np.ndarray:
    return f / (np.linalg.norm(f, axis=0, keepdims=True) + 1e-6)


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(c, h, w) -> (c, size[1], size[0]): area-averaged when shrinking, bilinear otherwise (torch:
    cv2.resize takes at most 4 channels for area averaging)."""
    x = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[None]
    w, h = size
    if x.shape[2] >= h and x.shape[3] >= w:
        x = F.adaptive_avg_pool2d(x, (h, w))
    else:
        x = F.interpolate(x, (h, w), mode="bilinear", align_corners=False)
    return x[0].numpy()


def affinity_features(layers: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Raw fire outputs (each (c, h, w)) -> (sum c, size[1], size[0]) unit vectors, layers weighing alike."""
    parts = [_l2n(resize_maps(f, size)) for f in layers]
    return np.ascontiguousarray(np.concatenate(parts) / np.sqrt(len(parts)), dtype=np.float32)


def transition(feat: np.ndarray, radius: int, beta: float) -> sp.csr_matrix:
    """Row-stochastic random-walk matrix over the grid cells of ``feat`` (d, h, w).

    The affinity is symmetric, so each pair of offsets (+o, -o) costs one product."""
    _, h, w = feat.shape
    n = h * w
    idx = np.arange(n).reshape(h, w)
    rows, cols, vals = [], [], []
    for dy in range(0, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx > radius * radius or (dy == 0 and dx < 0):
                continue
            y0, y1, x0, x1 = 0, h - dy, max(0, -dx), min(w, w - dx)
            if y1 <= y0 or x1 <= x0:
                continue
            s = np.einsum("chw,chw->hw", feat[:, y0:y1, x0:x1], feat[:, y0 + dy : y1 + dy, x0 + dx : x1 + dx])
            a, b = idx[y0:y1, x0:x1].ravel(), idx[y0 + dy : y1 + dy, x0 + dx : x1 + dx].ravel()
            v = s.ravel().clip(min=0) ** beta
            rows.append(a)
            cols.append(b)
            vals.append(v)
            if dy or dx:  # the mirrored offset: the same pairs the other way round
                rows.append(b)
                cols.append(a)
                vals.append(v)
    a = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    d = np.asarray(a.sum(1)).ravel()  # >= 1: every cell is its own neighbour with cos = 1
    return sp.diags(1.0 / np.maximum(d, 1e-12)) @ a


def propagate(scores: np.ndarray, feat: np.ndarray, params: TagParams) -> np.ndarray:
    """(L, h, w) scores, background first -> propagated, each divided by its maximum."""
    L, h, w = scores.shape
    p = transition(feat, params.radius, params.beta)
    v = scores.reshape(L, -1).T.astype(np.float64)
    for _ in range(params.steps):
        v = p @ v
    v = v / np.maximum(v.max(0, keepdims=True), 1e-12)
    return v.T.reshape(L, h, w).astype(np.float32)


def initial_scores(cams: np.ndarray, size: tuple[int, int], alpha: float) -> np.ndarray:
    """(K, h16, w16) raw tag CAMs -> (K + 1, size[1], size[0]): background, then tags in [0, 1]."""
    s = resize_maps(np.maximum(cams, 0), size).clip(min=0) if len(cams) else np.zeros((0, size[1], size[0]), np.float32)
    peak = s.reshape(len(s), -1).max(1) if len(s) else np.zeros(0)
    s = s / np.where(peak > 0, peak, 1.0)[:, None, None]
    bg = (1.0 - (s.max(0) if len(s) else np.zeros((size[1], size[0]), np.float32))) ** alpha
    return np.concatenate([bg[None], s]).astype(np.float32)


def multiscale(cams: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Raw (K, h_i, w_i) CAMs of the same tags from passes at several scales -> (K, size[1], size[0]):
    the mean of each pass's map resampled to ``size`` and divided by that tag's maximum in it.

    A tag with no CAM in the first pass (``cams[0]``) stays all zero: the Segmenter reports it
    as "no_cam" from that pass, so it must not take pixels from the other tags either."""
    out = []
    for c in cams:
        m = resize_maps(np.maximum(c, 0), size).clip(min=0)
        peak = m.reshape(len(m), -1).max(1)
        out.append(m / np.where(peak > 0, peak, 1.0)[:, None, None])
    first = out[0].reshape(len(out[0]), -1).max(1) > 0
    return (np.mean(out, axis=0) * first[:, None, None]).astype(np.float32)


def tag_scores(
    cnn_shape: tuple[int, int],
    cams: np.ndarray,
    aff_layers: list[np.ndarray],
    params: TagParams,
    extra_cams: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """(K + 1, gh, gw) propagated scores on the grid, background first, each in [0, 1].

    ``extra_cams``: the same tags' raw CAMs from passes at other scales (each spanning the image)."""
    cnn_h, cnn_w = cnn_shape
    gsize = (max(2, int(np.ceil(cnn_w / params.grid))), max(2, int(np.ceil(cnn_h / params.grid))))
    if len(extra_cams) and len(cams):
        cams = multiscale([cams, *extra_cams], gsize)
    s = initial_scores(cams, gsize, params.alpha)
    if params.steps > 0:
        s = propagate(s, affinity_features(aff_layers, gsize), params)
    return s


def shares(scores: np.ndarray, image_shape: tuple[int, int]) -> np.ndarray:
    """(L, gh, gw) grid scores -> (L, H, W) each label's share of their sum at every pixel."""
    h, w = image_shape
    up = resize_maps(scores, (w, h))
    return up / np.maximum(up.sum(0, keepdims=True), 1e-12)


def gate(masks: np.ndarray, share: np.ndarray, params: TagParams) -> np.ndarray:
    """(K, H, W) today's masks of the tags, (K + 1, H, W) shares (background first) -> gated masks."""
    tags = share[1:]
    keep: float | np.ndarray = params.keep
    if params.keep_rel is not None and len(tags):
        peak = tags.reshape(len(tags), -1).max(1)
        keep = np.maximum(params.keep, params.keep_rel * peak)[:, None, None]
    return (masks.astype(bool) & (tags >= keep)) | (tags >= params.add)


def answer(mask: np.ndarray, share: np.ndarray, k: int, cam: np.ndarray, params: TagParams, cut_ran: bool = True) -> np.ndarray:
    """Tag ``k``'s served mask: today's ``mask`` (H, W) gated by ``share`` (K + 1, H, W, background
    first), or where that leaves nothing and ``cut_ran``, the fallback of the module docstring
    (5.) from ``cam`` (H, W, the tag's CAM divided by its peak)."""
    g = gate(mask[None], share[[0, k + 1]], params)[0]
    if g.any() or params.fallback is None or not cut_ran:
        return g
    wins = share.argmax(0) == k + 1  # ties go to background (label 0)
    g = mask.astype(bool) & wins
    if not g.any():
        strong = cam >= params.fallback
        g = strong & wins
        if not g.any():
            g = strong
    return g


def propagated_shares(
    cnn_shape: tuple[int, int],
    cams: np.ndarray,
    layers: list[np.ndarray],
    image_shape: tuple[int, int],
    params: TagParams = TagParams(),
    extra_cams: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """(K + 1, H, W) shares of background and of each tag (``cams`` order) at the image size.

    ``cnn_shape``: (h, w) of the CNN input; ``cams``: (K, h16, w16) raw CAMs of the tags from that
    pass; ``layers``: the pass's raw fire3 and fire5 outputs; ``extra_cams``: the tags' raw CAMs
    from the passes at ``params.scales`` (all maps span the whole image).
    """
    return shares(tag_scores(cnn_shape, cams, layers, params, extra_cams), image_shape)


def scaled_input(image: np.ndarray, cnn_shape: tuple[int, int], scale: float) -> np.ndarray:
    """``image`` resized so its longer side is ``scale`` x the first pass's (upsampled when the
    image is smaller: the point of the pass is that the network sees the object larger)."""
    h, w = image.shape[:2]
    side = max(32, round(scale * max(cnn_shape)))
    f = side / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)


def _canonical(name: str) -> str:
    return voc.VOC_CLASSES[voc.voc_index(name) - 1]


class _SegmenterLike(Protocol):
    """What TagShares reads from the Segmenter (model/segmenter.py)."""

    @property
    def image(self) -> np.ndarray: ...

    @property
    def cnn(self) -> object: ...  # CnnOutput: .voc_cams (20, h16, w16)

    def class_cam(self, voc_class: str) -> tuple[np.ndarray, bool]: ...  # (H, W) in [0, 1], evidence


class TagShares:
    """The Segmenter's tag path: shares per image and tag set, computed once, thread-safe.

    The shares depend on every tag of the image (they compete for pixels), so they are keyed by
    the tag set in VOC order: each prompt of one request (and its second opinion) gates with the
    same shares whichever asks first. fire3 / fire5 come from one more pass of the network at
    the CAM's input size (the CNN output may come from the evaluator's cache, which holds only
    logits and CAMs); its CAM equals CamNet's at the same size (model/features.py).
    """

    def __init__(self, net: SqueezeNet11, cnn_max_side: int | None, params: TagParams = TagParams()) -> None:
        self.net = net
        self.cnn_max_side = cnn_max_side
        self.params = params
        self._lock = threading.Lock()
        self._fire: tuple[tuple[int, int], list[np.ndarray]] | None = None
        self._scaled: list[np.ndarray] | None = None  # (20, h, w) VOC CAMs per params.scales
        self._walk: tuple[tuple[int, int], list[np.ndarray]] | None = None  # the first scaled pass's fire3/5
        self._shares: dict[tuple[str, ...], np.ndarray] = {}

    def reset(self) -> None:
        """A new image: forget its fire maps, scaled CAMs and shares."""
        with self._lock:
            self._fire = None
            self._scaled = None
            self._walk = None
            self._shares = {}

    def run(self, image: np.ndarray) -> CnnOutput:
        """The image's CNN pass, keeping fire3 / fire5 for the shares: the Segmenter's set_image
        calls this instead of CamNet.run, so tag mode pays for one pass, not two."""
        p = forward_features(self.net, image, self.cnn_max_side, ("fire3", "fire5"))
        with self._lock:
            self._fire = (p.input_shape, [p.layers["fire3"], p.layers["fire5"]])
            self._scaled = None
            self._walk = None
            self._shares = {}
        return CnnOutput(logits=p.logits, voc_cams=pool_voc_cams(p.cam, context=self.params.cam_context))

    def take(self, input_shape: tuple[int, int], fire3: np.ndarray, fire5: np.ndarray) -> None:
        """fire3 / fire5 of this image from a pass already run (the featcut configuration's
        hypercolumn pass, model/features.py): tag mode then pays for one pass, not two."""
        with self._lock:
            self._fire = (input_shape, [fire3, fire5])
            self._shares = {}

    def shares(self, seg: _SegmenterLike, tags: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray]:
        """(tags in VOC order, their (K + 1, H, W) shares, background first)."""
        key = tuple(sorted({_canonical(c) for c in tags}, key=voc.voc_index))
        with self._lock:
            if key not in self._shares:
                if self._fire is None:
                    p = forward_features(self.net, seg.image, self.cnn_max_side, ("fire3", "fire5"))
                    self._fire = (p.input_shape, [p.layers["fire3"], p.layers["fire5"]])
                cnn_shape, layers = self._fire
                if self._scaled is None:  # paid once per image, and only when tags are asked
                    walk = self.params.walk_scaled
                    self._scaled = []
                    for n, f in enumerate(self.params.scales):
                        fire = ("fire3", "fire5") if walk and n == 0 else ()
                        # only the VOC CAMs are read: the classifier runs for their ImageNet rows alone
                        q = forward_features(self.net, scaled_input(seg.image, cnn_shape, f), None, fire, VOC_ROWS)
                        self._scaled.append(pool_voc_cams(q.cam, VOC_ROWS, self.params.cam_context))
                        if fire:
                            self._walk = (q.input_shape, [q.layers["fire3"], q.layers["fire5"]])
                if self._walk is not None:
                    cnn_shape, layers = self._walk
                idx = [voc.voc_index(c) - 1 for c in key]
                cams = np.asarray(seg.cnn.voc_cams)[idx]  # type: ignore[attr-defined]
                extra = [c[idx] for c in self._scaled]
                self._shares[key] = propagated_shares(cnn_shape, cams, layers, seg.image.shape[:2], self.params, extra)
            return key, self._shares[key]

    def gate(
        self, seg: _SegmenterLike, voc_class: str, mask: np.ndarray, rivals: Sequence[str], cut_ran: bool = True
    ) -> np.ndarray:
        """``mask`` of ``voc_class`` (today's cut) gated by the shares of the image's tags, with
        the fallback (``answer``) where that leaves nothing; ``cut_ran``: the tag's cut ran (it
        had CAM foreground of its own after the rivals took theirs)."""
        key, share = self.shares(seg, (voc_class, *rivals))
        k = key.index(_canonical(voc_class))
        if self.params.fallback is None:
            return gate(mask[None], share[[0, k + 1]], self.params)[0]
        return answer(mask, share, k, seg.class_cam(voc_class)[0], self.params, cut_ran)

    def support(self, seg: _SegmenterLike, voc_class: str, mask: np.ndarray, rivals: Sequence[str]) -> float:
        """The mean share of ``voc_class`` over ``mask`` (0 for an empty mask): how strongly the
        propagated CAMs of the image's tags back the pixels the tag's answer holds."""
        if not mask.any():
            return 0.0
        key, share = self.shares(seg, (voc_class, *rivals))
        return float(share[key.index(_canonical(voc_class)) + 1][mask].mean())


__all__ = [
    "TagParams",
    "TagShares",
    "answer",
    "gate",
    "initial_scores",
    "multiscale",
    "propagate",
    "propagated_shares",
    "scaled_input",
    "shares",
    "tag_scores",
    "transition",
]
