"""The Segmenter: set an image once (one CNN pass), then cheap calls per box or tag.

A box's or tag's CAM is digitized into a 4-valued initial mask (model/techniques.py), which
the configured cut (model/cut.py) turns into the mask; model/config.py says how each step
runs. A result's score is the mean normalised CAM inside the mask, or with ``agreement=True``
its IoU with a second opinion (the same prompt cut with another technique).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, cast

import cv2
import numpy as np

from . import voc
from .cnn import CamNet, ClassScore, CnnOutput, class_probabilities, normalise, pool_voc_cams
from .config import REFERENCE, EngineConfig
from .cut import Cut, CutInputs, CutReport, Window, make_cut, windowed_cut
from .featcut import click_region, click_window, continues, widen
from .features import PixelFeatures
from .grabcut import foreground, has_both_sides
from .image import to_rgb_uint8
from .pool import run_jobs
from .prompts import Box, BoxPrompt, Seeds
from .results import (
    MaskResult,
    Task,
    agreement_score,
    cam_score,
    cam_thresholds,
    known_class,
    mask_iou,
    second_opinion,
    tag_support_score,
)
from .tagprop import TagParams, TagShares
from .techniques import GC_BGD, GC_FGD, GC_PR_BGD, GC_PR_FGD, Technique, digitize
from .windows import box_window, tag_window

# Boxes thinner than this (in pixels) are returned filled: GrabCut cannot model an object a
# pixel or two wide, and the annotator drew exactly that region.
MIN_BOX_SIDE = 4


class Segmenter:
    """Set an image once, then segment boxes and tags cheaply (SamPredictor-style).

    >>> seg = Segmenter()
    >>> seg.set_image(rgb)
    >>> seg.segment_box(Box(10, 20, 200, 180), "dog").mask
    """

    def __init__(
        self,
        config: EngineConfig = REFERENCE,
        net: CamNet | None = None,
        weights: str | None = None,
        threads: int = 1,
        tag_work_pixels: int | None = None,
    ) -> None:
        """``threads`` > 1 runs the cuts of one call (several boxes, a mask and its second
        opinion) concurrently: OpenCV releases the GIL inside cv2.grabCut. Masks do not depend on
        it (each GrabCut seeds its own thread's RNG). Leave it at 1 where processes already
        share the cores (the evaluator's workers). ``tag_work_pixels``: see _tag_segmenter
        (None: tags at full size, the report)."""
        if threads < 1:
            raise ValueError("threads must be >= 1")
        if tag_work_pixels is not None and tag_work_pixels < 1:
            raise ValueError("tag_work_pixels must be >= 1 or None")
        self.config = config
        self.threads = threads
        self.tag_work_pixels = tag_work_pixels
        self._tag_proxy: Segmenter | None = None
        self._rival_tops: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._tops_lock = threading.Lock()
        self.net = net or CamNet(weights)
        self.cutter: Cut = make_cut(config)
        self._image: np.ndarray | None = None
        self._cnn: CnnOutput | None = None
        self._upsampled: dict[int, np.ndarray] = {}
        # A cut that models CNN features (featcut) gets hypercolumns from the CAM's own pass.
        self._needs_features = bool(getattr(self.cutter, "needs_features", False))
        self._features: PixelFeatures | None = None
        # Tags gated by CAMs propagated on the network's own features (model/tagprop.py).
        tag_params = TagParams(
            scales=config.class_tag_scales,
            fallback=config.class_tag_fallback,
            walk_scaled=config.class_tag_walk_scaled,
            keep_rel=config.class_tag_keep_rel,
            cam_context=config.cam_context,
        )
        self._tagprop = TagShares(self.net.net, config.cnn_max_side, tag_params) if config.class_tagprop else None
        # A learned per-project head set (model/head.py HeadSet), set before set_image; None is the
        # training-free model, exactly.
        self.heads: Any = None

    # -- image -------------------------------------------------------------------------------
    def set_image(self, image: np.ndarray, cnn: CnnOutput | None = None) -> CnnOutput:
        """Take an image (any of grey/RGB/RGBA, uint8/uint16/float) and run the CNN once.

        ``cnn`` may carry a cached CNN output for this very image (the evaluator's cache).
        """
        self._image = to_rgb_uint8(image)
        self._features = None
        if self._tagprop is not None:
            self._tagprop.reset()
            if cnn is None and not self._needs_features:  # one pass gives the CAM and fire3 / fire5
                cnn = self._tagprop.run(self._image)
        if self._needs_features:  # one pass gives the CAM and the features (a cached CAM is the same)
            kept = cnn.features if cnn is not None else None
            fixed = getattr(self.heads, "fixed_dims", 0)  # a learned head reads the fixed projection too
            if isinstance(kept, PixelFeatures) and kept.image_shape == self._image.shape[:2] and (kept.fixed or not fixed):
                self._features = kept  # the caller's cached output of this very image: no second pass
            else:
                self._features = PixelFeatures.of_image(self.net.net, self._image, self.config.cnn_max_side, fixed_dims=fixed)
            fire3, fire5 = self._features.raw_layer("fire3"), self._features.raw_layer("fire5")
            if self._tagprop is not None and fire3 is not None and fire5 is not None and self._features.input_shape:
                self._tagprop.take(self._features.input_shape, fire3, fire5)
            if cnn is None:
                assert self._features.cam is not None  # a fresh pass's: only a caller's cached output is packed
                cams = pool_voc_cams(self._features.cam, context=self.config.cam_context)
                cnn = CnnOutput(logits=self._features.logits, voc_cams=cams)
            # What the caller may cache with the output (the backend's ImageCache, 8 images) kept
            # compact from here on: the raw layers packed, the 1000-class CAM dropped (5 -> 1.4 MB
            # per image; the worker's peak RSS, README "Speed").
            self._features.pack()
            cnn = dataclasses.replace(cnn, features=self._features)
        self._cnn = cnn if cnn is not None else self.net.run(self._image, self.config.cnn_max_side, self.config.cam_context)
        self._upsampled = {}
        self._tag_proxy = None
        self._rival_tops = {}
        return self._cnn

    @property
    def answers_from_previous(self) -> bool:
        """Whether box calls start from the ``previous`` mask with the clicks in the cut (featcut)."""
        return self._needs_features

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
        """VOC classes ranked by the softmax mass of their ImageNet members: which classes the image
        shows (a guess without a prompt). Never the context classes: their 49 garments' scattered
        mass would make person the guess for a cat photo (2007_003525: person 0.24, cat 0.09)."""
        return class_probabilities(self.cnn.logits)

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

    def forget_cams(self) -> None:
        """Drop the upsampled CAMs kept so far (each is a float32 image: 160 MB at 40 MP); a
        caller that goes class by class calls this after a class's last prompt."""
        self._upsampled = {}
        if self._tag_proxy is not None:
            self._tag_proxy.forget_cams()

    def class_cam(self, voc_class: str, region: Window | None = None) -> tuple[np.ndarray, bool]:
        return normalise(self.raw_class_cam(voc_class), region)

    # -- box task ----------------------------------------------------------------------------
    def segment_box(
        self,
        box: Box,
        voc_class: str | None = None,
        technique: Technique | None = None,
        seeds: Seeds | None = None,
        agreement: bool = False,
        previous: np.ndarray | None = None,
    ) -> MaskResult:
        """Binary mask of the object in ``box``; ``voc_class`` is needed by the CAM techniques.

        ``seeds`` (clicks, brush strokes) are hard constraints inside the box. With
        ``agreement=True`` the result's score is the second-opinion agreement (see
        model/results.py ``second_opinion``), which costs one more cut. ``previous`` (H, W bool): the mask
        this box got last, the starting point of the next answer for a cut that uses it
        (featcut); the GrabCut configurations answer from scratch, whatever it is.
        """
        res = self.segment_boxes([BoxPrompt(box, voc_class, technique, seeds, previous)], agreement)[0]
        if isinstance(res, Exception):
            raise res
        return res

    def segment_boxes(self, prompts: Sequence[BoxPrompt], agreement: bool = False) -> list[MaskResult | Exception]:
        """Masks of several boxes of the image, run concurrently with ``threads`` > 1.

        One entry per prompt, in order: its MaskResult, or the exception it raised (a BoxError
        for a box outside the image, a ValueError for an unknown class), so one bad box never
        sinks the others.
        """
        jobs: list[Callable[[], MaskResult]] = []
        seconds: list[Callable[[], MaskResult] | None] = []
        for p in prompts:
            jobs.append(partial(self._segment_box, p.box, p.voc_class, p.technique, p.seeds, previous=p.previous))
            alt = second_opinion(p.technique or self.config.box_technique, p.voc_class is not None, task="box")
            seconds.append(
                None if not agreement or alt is None else partial(self._segment_box, p.box, p.voc_class, alt, p.seeds, score=True)
            )
        return self._run_scored(jobs, seconds, unscored="box_too_small")

    def _run_scored(
        self,
        jobs: Sequence[Callable[[], MaskResult]],
        seconds: Sequence[Callable[[], MaskResult] | None],
        unscored: str,
        ahead: Callable[[], object] | None = None,
    ) -> list[MaskResult | Exception]:
        """Run every prompt's mask job and its second opinion (None: none) at once; a mask's
        score becomes its IoU with the second opinion, except after fallback ``unscored``.
        ``ahead``: a job whose result the others read from a cache, started first (its own
        result, or exception, is left to the jobs that read it)."""
        extra = [j for j in seconds if j is not None]
        first: list[Callable[[], Any]] = [] if ahead is None else [ahead]
        done = cast("list[MaskResult | Exception]", run_jobs([*first, *jobs, *extra], self.threads)[len(first) :])
        out: list[MaskResult | Exception] = []
        k = len(jobs)
        for res, second in zip(done[: len(jobs)], seconds, strict=True):
            if second is None:
                if isinstance(res, MaskResult) and res.learned is not None:
                    learned = self.heads.rescore(res.learned, None)
                    res.score = res.score if learned is None else learned
                out.append(res)
                continue
            alt_res, k = done[k], k + 1
            if isinstance(res, MaskResult) and res.fallback != unscored:
                if isinstance(alt_res, Exception):
                    raise alt_res  # the same prompt succeeded with the main technique: a bug, not bad input
                res.agreement = mask_iou(res.mask, alt_res.mask)
                res.score = agreement_score(res.agreement, res.confidence)
                if res.learned is not None:  # the learned score (model/head.py) reads the agreement
                    learned = self.heads.rescore(res.learned, res.agreement)
                    res.score = res.score if learned is None else learned
            out.append(res)
        return out

    def _side(self, task: Task, score: bool) -> int | None:
        """Cut resolution for a box or a whole-image (tag, clicks) cut, or for its score."""
        if score and self.config.score_max_side is not None:
            return self.config.score_max_side
        return self.config.grabcut_max_side if task == "box" else self.config.class_grabcut_max_side

    def _cut(
        self, init: np.ndarray, window: Window | None, max_side: int | None, extras: CutInputs | None = None
    ) -> tuple[np.ndarray, str | None]:
        return windowed_cut(self.cutter, self.image, init, window, max_side, extras)

    def _segment_box(
        self,
        box: Box,
        voc_class: str | None,
        technique: Technique | None,
        seeds: Seeds | None,
        score: bool = False,
        previous: np.ndarray | None = None,
    ) -> MaskResult:
        tech = technique or self.config.box_technique
        img = self.image
        h, w = img.shape[:2]
        x0, y0, x1, y1 = box.clip(w, h)
        rich = self._features is not None  # featcut: clicks, previous mask and features reach the cut
        interactive = rich and (previous is not None or (seeds is not None and not seeds.is_empty()))
        if interactive and seeds is not None:
            x0, y0, x1, y1 = widen((x0, y0, x1, y1), seeds.positive_points, w, h)
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
        if tech.kind == "grabcut" or voc_class is None:  # a CAM technique without a class was refused above
            init[y0:y1, x0:x1] = GC_PR_FGD
        else:
            region = None if self.config.cam_norm == "image" else (x0, y0, x1, y1)
            cam, evidence = self.class_cam(voc_class, region)
            inside = digitize(cam[y0:y1, x0:x1], cam_thresholds(tech))
            if not evidence:
                fallback = "no_cam"
                inside[:] = GC_PR_FGD
            elif tech.kind == "gccam" and not np.any(foreground(inside)):
                fallback = "cam_no_foreground"
                inside[:] = GC_PR_FGD
            # Clicks, not the CAM, decide what is certain once the annotator clicks; a cut may
            # take the CAM's peak as a hint even for the first answer (featcut, Cut.hard_cam_peak).
            if interactive or (rich and not self.cutter.hard_cam_peak):
                inside[inside == GC_FGD] = GC_PR_FGD
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
            return MaskResult(m, tech, cam_score(m, cam), fallback)
        extras = None
        if rich:
            groups = () if seeds is None else ((True, seeds.positive_points), (False, seeds.negative_points))
            pts = tuple(
                (float(x), float(y), positive) for positive, group in groups for x, y in group if x0 <= x < x1 and y0 <= y < y1
            )
            prev = None
            if previous is not None:
                if previous.shape != (h, w):
                    raise ValueError(f"previous mask of shape {previous.shape} does not match the {w}x{h} image")
                prev = previous.astype(np.float32)
            hook = self.heads.hook(voc_class) if self.heads is not None and not score and not interactive else None
            fixed = None if hook is None or self._features is None else self._features.fixed_sampler()
            report = CutReport() if self.config.score_confidence and not score else None
            extras = CutInputs(
                cam=cam,
                features=self._features,
                previous=prev,
                points=pts,
                head=hook,
                head_features=fixed,
                report=report,
                score=score,
            )
        m, cut_fallback = self._cut(
            init, box_window(self.config.crop_margin, x0, y0, x1, y1, w, h), self._side("box", score), extras
        )
        m[:y0] = False
        m[y1:] = False
        m[:, :x0] = False
        m[:, x1:] = False
        # A box says an object is there: a cut that kept none of it answers the box's CAM core.
        level = self.config.box_empty_fallback
        box_cam = None if cam is None or not evidence or interactive or m.any() else cam[y0:y1, x0:x1]
        if level is not None and box_cam is not None and cut_fallback is None and float(box_cam.max()) > 0:
            m[y0:y1, x0:x1] = box_cam >= level * float(box_cam.max())
            cut_fallback = "cut_empty"
        res = MaskResult(m, tech, cam_score(m, cam), fallback or cut_fallback)
        if extras is not None and cut_fallback is None:
            res.learned = extras.head
            res.confidence = extras.report.confidence if extras.report is not None else None
        return res

    # -- tag task ----------------------------------------------------------------------------
    def segment_class(
        self, voc_class: str, technique: Technique | None = None, agreement: bool = False, others: Sequence[str] = ()
    ) -> MaskResult:
        """Binary mask of every region of ``voc_class`` (a tag) in the image, from the CAM alone.

        ``agreement=True``: the score is the second-opinion agreement (one more cut).
        ``others``: the image's other tags; they compete for pixels when config.class_exclusive.
        """
        res = self.segment_classes([(voc_class, technique)], agreement, others)[0]
        if isinstance(res, Exception):
            raise res
        return res

    def segment_classes(
        self, prompts: Sequence[tuple[str, Technique | None]], agreement: bool = False, others: Sequence[str] = ()
    ) -> list[MaskResult | Exception]:
        """Masks of several (tag, technique) pairs, run concurrently with ``threads`` > 1; one
        entry per prompt, its MaskResult or the exception it raised (see segment_boxes).

        The image's tags are the prompts' classes plus ``others``; each tag competes with the
        rest of them when config.class_exclusive.
        """
        proxy = self._tag_segmenter()
        if proxy is not self:
            h, w = self.image.shape[:2]
            return [
                r if isinstance(r, Exception) else _upsampled(r, w, h) for r in proxy.segment_classes(prompts, agreement, others)
            ]
        tags = tuple(dict.fromkeys(c for c in [c for c, _ in prompts] + list(others) if known_class(c)))
        rivals = {c: tuple(o for o in tags if o != c) for c in tags}
        jobs: list[Callable[[], MaskResult]] = []
        seconds: list[Callable[[], MaskResult] | None] = []
        for cls, tech in prompts:
            jobs.append(partial(self._segment_class, cls, tech, rivals=rivals.get(cls, ())))
            # Tags gated by propagated shares (class_tagprop) get no second opinion: it is gated by
            # the same shares and agrees whatever the truth (Spearman rho with the true IoU 0.18, 43
            # tags of 25 VOC images; README "Mask scores"); their score is the mean CAM or the
            # shares' support (class_tag_support_score), and skipping it saves a cut per tag.
            want = agreement and self._tagprop is None
            alt = second_opinion(tech or self.config.class_technique, True, task="tag") if want else None
            seconds.append(
                None if alt is None else partial(self._segment_class, cls, alt, score=True, rivals=rivals.get(cls, ()))
            )
        # The shares (the 480 px pass and the walk, model/tagprop.py) as a job of their own, ahead of
        # the tags' cuts: with threads > 1 they run beside the first tag's GrabCut instead of after it
        # (each tag's gate waits for them), the same masks sooner (README "Speed", session 10).
        ahead = partial(self._tagprop.shares, self, tags) if self._tagprop is not None and self.threads > 1 and tags else None
        return self._run_scored(jobs, seconds, unscored="no_cam", ahead=ahead)

    def _rival_max(self, voc_class: str, rivals: Sequence[str]) -> np.ndarray:
        """Per pixel the highest raw CAM among ``rivals`` (those with ImageNet members). From the
        top two of the image's tags, kept per tag set: the same as a max over every rival's
        upsampled CAM, without holding one full-size float map per tag (20 tags: 20 maps)."""
        ids = tuple(sorted({voc.voc_index(c) for c in (voc_class, *rivals) if voc.imagenet_members(c)}))
        with self._tops_lock:
            if ids not in self._rival_tops:
                h, w = self.image.shape[:2]
                first = np.full((h, w), -np.inf, np.float32)
                second, arg = first.copy(), np.zeros((h, w), np.int8)
                for i in ids:  # each tag's CAM upsampled once, not kept
                    cam = cv2.resize(self.cnn.voc_cams[i - 1], (w, h), interpolation=cv2.INTER_LINEAR).clip(min=0)
                    above = cam > first
                    np.maximum(second, np.where(above, first, cam), out=second)
                    np.copyto(first, cam, where=above)
                    arg[above] = i
                self._rival_tops[ids] = (first, second, arg)
            first, second, arg = self._rival_tops[ids]
        return np.where(arg == voc.voc_index(voc_class), second, first)

    def _tag_segmenter(self) -> Segmenter:
        """Itself, or past ``tag_work_pixels`` a Segmenter on a copy downscaled to about that
        size, sharing this CNN output. Why: a tag holds full-size float maps (every tag's CAM
        while tags compete, the shares), 20 tags on 40 MP took 4.9 GB; what decides its mask (a
        <= 320 px CNN's CAM, a cut at class_grabcut_max_side) is all there at a few megapixels."""
        h, w = self.image.shape[:2]
        if self.tag_work_pixels is None or h * w <= self.tag_work_pixels:
            return self
        if self._tag_proxy is None:
            s = (self.tag_work_pixels / (h * w)) ** 0.5
            small = cv2.resize(self.image, (max(1, int(w * s)), max(1, int(h * s))), interpolation=cv2.INTER_AREA)
            proxy = Segmenter(self.config, net=self.net, threads=self.threads)
            proxy.set_image(small, cnn=self.cnn)
            self._tag_proxy = proxy
        return self._tag_proxy

    def _segment_class(
        self, voc_class: str, technique: Technique | None, score: bool = False, rivals: Sequence[str] = ()
    ) -> MaskResult:
        res = self._segment_class_cam(voc_class, technique, score, rivals)
        if self._tagprop is not None and res.fallback != "no_cam":
            # The tag's cut gated by the shares of the image's tags; a second opinion is gated
            # alike, so the agreement score compares the masks that are sent.
            res.mask = self._tagprop.gate(self, voc_class, res.mask, rivals, cut_ran=res.fallback is None)
            if self.config.class_tag_recut and res.mask.any():
                res.mask, res.confidence = self._recut_tag(voc_class, res.mask)
            if self.config.class_tag_support_score:
                # How sure the CNN is of a tag the annotator gave: with cam_context its evidence, as its CAM's
                # (the score's Spearman rho over the 347 VOC tags 0.526 with, 0.486 without; README (22)).
                ranked = class_probabilities(self.cnn.logits, self.config.cam_context)
                probability = {c.voc_class: c.probability for c in ranked}.get(voc_class, 0.0)
                res.score = tag_support_score(self._tagprop.support(self, voc_class, res.mask, rivals), probability)
            else:
                res.score = cam_score(res.mask, self.class_cam(voc_class)[0])
        return res

    def _recut_tag(self, voc_class: str, gated: np.ndarray) -> tuple[np.ndarray, float | None]:
        """The gated tag mask re-cut by the box core (featcut's cut) on the mask's bounding box,
        the mask as its previous answer: the starting point, as after a click (config
        class_tag_recut). GrabCut's tag mask came from the coarse CAM alone; the box core fits
        its colour models inside the box the share-gated mask spans, so the masks shrink where
        they spilled (40.0 vs 39.2 tag mIoU, a gain on all four halves; README "The feature cut"
        (15)). A box too small for a cut, or an empty answer, keeps the gated mask. Also returns
        the re-cut's confidence (CutReport; None where the gated mask is kept)."""
        res = self._segment_box(Box.of_mask(gated), voc_class, None, None, previous=gated)
        if res.fallback == "box_too_small" or not res.mask.any():
            return gated, None
        return res.mask, res.confidence

    def _tag_init(self, voc_class: str, tech: Technique, rivals: Sequence[str]) -> tuple[np.ndarray, np.ndarray] | None:
        """A tag's CAM and its 4-valued start digitized by ``tech``'s thresholds, the pixels the
        rivals' CAMs win made probable background (class_exclusive); None where the CAM has no evidence."""
        cam, evidence = self.class_cam(voc_class)
        if not evidence:
            return None
        init = digitize(cam, cam_thresholds(tech))
        if self.config.class_exclusive and rivals:
            # a pixel is lost where any rival's raw CAM beats this class's (rivals never hold voc_class)
            lost = self._rival_max(voc_class, rivals) > self.raw_class_cam(voc_class)
            init[lost & foreground(init)] = GC_PR_BGD
        return cam, init

    def _segment_class_cam(
        self, voc_class: str, technique: Technique | None, score: bool = False, rivals: Sequence[str] = ()
    ) -> MaskResult:
        tech = technique or self.config.class_technique
        if tech.kind == "grabcut":
            raise ValueError("naked GrabCut needs a box; a tag uses 'cam' or a GrabCut-CAM variant")
        voc.voc_index(voc_class)
        h, w = self.image.shape[:2]
        start = self._tag_init(voc_class, tech, rivals)
        if start is None:
            return MaskResult(np.zeros((h, w), bool), tech, 0.0, "no_cam")
        cam, init = start
        if tech.kind == "cam":
            m = foreground(init)
            return MaskResult(m, tech, cam_score(m, cam))
        return self._cut_tag(cam, init, tech, score)

    def _cut_tag(self, cam: np.ndarray, init: np.ndarray, tech: Technique, score: bool) -> MaskResult:
        """A tag's GrabCut from its 4-valued start in the tag's window (class_window_margin); a start
        without both sides answers its foreground as it is (``no_background``)."""
        if not has_both_sides(init):
            m = foreground(init)
            return MaskResult(m, tech, cam_score(m, cam), "no_background")
        m, fallback = self._cut(init, tag_window(init, self.config.class_window_margin), self._side("tag", score))
        return MaskResult(m, tech, cam_score(m, cam), fallback)

    # -- interactive clicks / strokes without a box ----------------------------------------------
    def segment_seeds(
        self,
        seeds: Seeds,
        voc_class: str | None = None,
        technique: Technique | None = None,
        previous: np.ndarray | None = None,
    ) -> MaskResult:
        """Mask from clicks / strokes alone (no box).

        The first answer (no ``previous``) is GrabCut's in every configuration: the initial mask
        is the tag task's digitized CAM when a class is given (else all probable background), with
        positive seeds as definite foreground and negative seeds as definite background; the cut
        decides the rest, and only the connected regions that touch a positive seed are kept, since
        a click names one object. Once there is an answer to refine - ``previous`` (H, W bool: the
        mask this object got last) and clicks that continue it (model/featcut.py ``continues``) -
        a cut that answers from the previous mask (featcut) gets the prompt as a box prompt: the
        box the clicks, ``previous`` and the class CAM stand for (``click_window``), the seeds and
        ``previous`` in the cut, the configuration's box technique (``technique``, a tag technique
        for whole-image cuts, is not used there). Why not featcut from the first click: without a
        box its first answer was better on average (0.374 vs 0.317 IoU on 21 objects) but could be
        a part of the object (Label Studio's smart keypoint on the dog of 2007_000063 through a
        real browser: 0.124 IoU, GrabCut 0.478); GrabCut's first answer is the safer start, and
        featcut's click loop refines it (README "The feature cut").
        """
        tech = technique or self.config.class_technique
        h, w = self.image.shape[:2]
        if seeds.is_empty():
            raise ValueError("no clicks or strokes given")
        pos, neg = seeds.rasterize(h, w)
        if previous is not None and previous.shape != (h, w):
            raise ValueError(f"previous mask of shape {previous.shape} does not match the {w}x{h} image")
        if self._features is not None and previous is not None and continues(np.asarray(previous, bool), pos):
            return self._seeds_as_box(seeds, pos, neg, voc_class, np.asarray(previous, bool))
        if not pos.any():
            return MaskResult(np.zeros((h, w), bool), tech, 0.0, "no_positive_seed")
        cam = None
        init = np.full((h, w), GC_PR_BGD, np.uint8)
        if voc_class is not None and tech.kind != "grabcut":
            cam, evidence = self.class_cam(voc_class)
            if evidence:
                init = digitize(cam, cam_thresholds(tech))
                init[init == GC_BGD] = GC_PR_BGD  # clicks, not the CAM, decide what is certain
                init[init == GC_FGD] = GC_PR_FGD
        init[pos] = GC_FGD
        init[neg] = GC_BGD
        m, fallback = self._cut(init, None, self._side("tag", False))
        if fallback:
            return MaskResult(m, tech, cam_score(m, cam), fallback)
        n, comp = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        keep = np.unique(comp[pos & m])
        m = np.isin(comp, keep[keep > 0])
        return MaskResult(m, tech, cam_score(m, cam))

    def _seeds_as_box(
        self, seeds: Seeds, pos: np.ndarray, neg: np.ndarray, voc_class: str | None, previous: np.ndarray
    ) -> MaskResult:
        """featcut's refinement of a click-only answer: one featcut cut in the window the clicks,
        the ``previous`` mask and the CAM's region holding a click (model/featcut.py
        ``click_region``) stand for. No box says what is background, so the initial mask is
        probable background, except the previous mask and that region (probable foreground) and
        the seeds (definite); the core starts from ``previous``, and its click prior and EM round
        decide the rest, as after a click in a box.
        """
        h, w = pos.shape
        tech = self.config.box_technique if voc_class is not None else Technique("grabcut")
        cam = None
        if voc_class is not None:
            cam, evidence = self.class_cam(voc_class)  # normalised over the image: no box bounds it
            cam = cam if evidence else None
        region = click_region(pos, cam)
        window = click_window(pos, region, previous)
        init = np.full((h, w), GC_PR_BGD, np.uint8)
        init[region | previous] = GC_PR_FGD
        init[pos] = GC_FGD
        init[neg] = GC_BGD
        x0, y0, x1, y1 = window
        groups = ((True, seeds.positive_points), (False, seeds.negative_points))
        pts = tuple((float(x), float(y), p) for p, group in groups for x, y in group if x0 <= x < x1 and y0 <= y < y1)
        # keep_previous off: a click-only previous answer is rougher than a box's (GrabCut's from one
        # click), and leaning on it cost clicks (first 8 images, NoC@90 10.05 without, 10.43 with).
        extras = CutInputs(
            cam=cam, features=self._features, previous=previous.astype(np.float32), points=pts, keep_previous=False
        )
        m, fallback = self._cut(init, window, self._side("box", False), extras)
        return MaskResult(m, tech, cam_score(m, cam), fallback)


def _upsampled(res: MaskResult, w: int, h: int) -> MaskResult:
    """A tag's mask made at the working size, at the image size (bilinear on 0/255, cut at half:
    smooth edges, no blocks); score, technique and fallback are the working size's."""
    up = cv2.resize(res.mask.astype(np.uint8) * 255, (w, h), interpolation=cv2.INTER_LINEAR)
    res.mask = up >= 128
    return res
