"""Prompts -> masks: the regions of one task from its boxes, tags, guessed classes or
interactive clicks (one Segmenter call per prompt kind). ``backend/model.py`` orchestrates
(versions, image cache, the predict loop, failures, metrics) and calls a :class:`RegionMaker`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model import Box, BoxError, BoxPrompt, Seeds, Segmenter, Technique
from model.cnn import renormalised
from model.engine import EngineConfig
from model.overlaps import evidence_maps, resolve_overlaps
from model.refine import subtract_negatives
from model.scores import honest_score
from model.segmenter import MaskResult, mask_iou

from .config import Settings
from .errors import TaskError
from .labels import LabelMap
from .prompts import LabeledBox, WantedClass, interactive_prompt
from .results import EncodedMask, decode_brush
from .schema import Schema
from .store import PredictedRegion


def last_mask_for_box(
    answered: list[PredictedRegion], box: tuple[float, float, float, float], h: int, w: int
) -> np.ndarray | None:
    """The newest box mask camcut predicted for this task from the same box (corners within a
    pixel: Label Studio sends them back as percentages), decoded at the image's size; None if none."""
    for r in reversed(answered):
        if r.kind == "box" and r.box is not None and max(abs(a - b) for a, b in zip(r.box, box, strict=True)) <= 1.0:
            return decode_brush(r.rle, r.height, r.width, h, w)
    return None


def last_mask_for_clicks(answered: list[PredictedRegion], label: str, h: int, w: int) -> np.ndarray | None:
    """The newest click mask camcut predicted for this task under the same label, decoded at the
    image's size; None if none. The engine decides whether the new clicks continue it
    (``Segmenter.segment_seeds``): the clicks' counterpart of :func:`last_mask_for_box`."""
    for r in reversed(answered):
        if r.kind == "seeds" and r.label == label:
            return decode_brush(r.rle, r.height, r.width, h, w)
    return None


@dataclass(frozen=True)
class AdaptedTechnique:
    """The technique the corrections of a project chose for one (kind, VOC class)."""

    technique: Technique
    mean_iou: float
    corrections: int


# (kind "box" | "class", VOC class) -> what its corrections chose
Adapted = Mapping[tuple[str, str], AdaptedTechnique]


@dataclass
class Region:
    """One mask to return, and what produced it (``box`` in pixels, for box prompts)."""

    label: str
    voc_class: str | None
    kind: str
    # encoded as soon as the cut finishes (a request never holds its full-size masks), except box
    # masks while their overlaps are resolved (see RegionMaker.box_regions)
    mask: np.ndarray | EncodedMask
    technique: Technique
    score: float
    box: tuple[float, float, float, float] | None = None
    fallback: str | None = None


@dataclass
class TaskOutcome:
    regions: list[Region] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    mode: str = ""
    empty: list[dict[str, Any]] = field(default_factory=list)  # classes with no pixels here: a result, not an error


OVERLAP_BUDGET_PIXELS = 64_000_000  # boxes x image pixels up to which a task's box overlaps are resolved (64 MB of masks)


def separate_boxes(seg: Segmenter, regions: list[Region]) -> None:
    """Pixels claimed by several box masks of the task go to one (model/overlaps.py's rule)."""
    boxed = [r for r in regions if r.box is not None and isinstance(r.mask, np.ndarray) and r.mask.any()]
    raw = [r.mask for r in boxed if isinstance(r.mask, np.ndarray)]  # all of them: the filter above
    if len(boxed) < 2:
        return
    cams = []
    for r in boxed:
        x0, y0, x1, y1 = (int(round(v)) for v in r.box)  # type: ignore[union-attr]
        cams.append(seg.class_cam(r.voc_class, (x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))[0] if r.voc_class else None)
    evidence = evidence_maps(seg.image.shape[:2], [r.box for r in boxed], cams)  # type: ignore[misc]
    for r, mask in zip(boxed, resolve_overlaps(raw, evidence), strict=True):
        r.mask = mask


class RegionMaker:
    """Turns the prompts of one task into :class:`Region` masks (appended to a :class:`TaskOutcome`)."""

    def __init__(
        self,
        settings: Settings,
        labels: LabelMap,
        config: EngineConfig,
        technique_for: Callable[[Adapted, str, str], Technique],
    ) -> None:
        self.settings, self.labels, self.config = settings, labels, config
        self.technique_for = technique_for

    def guesses(self, seg: Segmenter, schema: Schema, out: TaskOutcome) -> list[WantedClass]:
        """No prompt: the project's labels say which classes can be there, so the CNN chooses
        among their engine classes (probabilities renormalised over them): the most likely one
        always, the next ones if they reach CAMCUT_MIN_CLASS_PROBABILITY. Scored by agreement
        like tags (a renormalised probability is 1.0 for a one-class project: no quality signal).
        A project none of whose labels has an engine class gets the CNN's own guess as before."""
        labels = list(schema.brush_labels)
        project = sorted({c for lab in labels if (c := self.labels.resolve(lab)) is not None})
        p_min = self.settings.min_class_probability
        if project:
            ranked = renormalised(seg.class_probabilities(), project)
            picked = [g for g in ranked[: self.settings.max_classes] if g.probability >= p_min] or ranked[:1]
            return [WantedClass(self.labels.brush_label_for(g.voc_class, labels) or g.voc_class, g.voc_class) for g in picked]
        guesses = seg.predict_classes(p_min, self.settings.max_classes)
        if not guesses:
            out.warnings.append(f"no class reached probability {p_min:g}: nothing to segment")
        wanted = []
        for g in guesses:
            label = self.labels.brush_label_for(g.voc_class, labels)
            if label is None:
                out.warnings.append(f"the CNN sees {g.voc_class!r} (p={g.probability:.2f}) but BrushLabels has no label for it")
                continue
            wanted.append(WantedClass(label, g.voc_class, g.probability))
        return wanted

    def brush_label(self, label: str, voc_class: str | None, schema: Schema, out: TaskOutcome) -> str:
        labels = list(schema.brush_labels)
        for lab in labels:
            if lab.lower() == label.lower():
                return lab
        if voc_class is not None:
            lab2 = self.labels.brush_label_for(voc_class, labels)
            if lab2 is not None:
                return lab2
        if labels:
            out.warnings.append(f"label {label!r} is not one of the BrushLabels labels; the mask keeps it")
        return label

    def check_boxes(self, n: int, what: str = "boxes") -> None:
        if n > self.settings.max_boxes:
            raise TaskError(f"the task has {n} {what}, more than CAMCUT_MAX_BOXES={self.settings.max_boxes}")

    def box_regions(
        self,
        seg: Segmenter,
        boxes: list[LabeledBox],
        adapted: Adapted,
        schema: Schema,
        out: TaskOutcome,
        seeds: Seeds | None = None,
        previous: list[np.ndarray | None] | None = None,
    ) -> None:
        """One mask per labelled pixel box; the engine runs the boxes concurrently, a few at a
        time (see :meth:`_chunks`), each mask encoded as soon as its chunk is done. ``previous``
        (per box, or None): the mask camcut last answered for that box, where the cut starts from it."""
        prompts, techs = [], []
        for k, b in enumerate(boxes):
            cls = self.labels.resolve(b.label) if b.label else None
            if cls is None:
                tech = Technique("grabcut")
                out.warnings.append(f"label {b.label!r} has no engine class: naked GrabCut from its box")
            else:
                tech = self.technique_for(adapted, "box", cls)
            prompts.append(BoxPrompt(Box(*b.box), cls, tech, seeds, previous[k] if previous else None))
            techs.append(tech)
        # Overlapping boxes are resolved on the raw masks of the task together (model/overlaps.py),
        # which costs a full-size mask per box: done while that stays under OVERLAP_BUDGET_PIXELS;
        # past it (e.g. 100 boxes on a 40 MP image) masks are encoded as they finish and keep their overlaps.
        h, w = seg.image.shape[:2]
        resolve = 1 < len(prompts) and len(prompts) * h * w <= OVERLAP_BUDGET_PIXELS
        regions: dict[int, Region] = {}
        for i, res in self._chunks(seg, prompts):
            b, cls, tech = boxes[i], prompts[i].voc_class, techs[i]
            if isinstance(res, BoxError):
                out.warnings.append(f"box of {b.label!r} skipped: {res}")
                continue
            if isinstance(res, Exception):
                raise res
            score = self._classless_agreement(seg, b, res.mask, schema) if cls is None and not res.fallback else res.score
            mask: np.ndarray | EncodedMask = res.mask if resolve else EncodedMask.of(res.mask)
            regions[i] = Region(
                self.brush_label(b.label, cls, schema, out) if b.label else schema.brush_labels[0],
                cls,
                "box",
                mask,
                tech,
                honest_score(score, res.mask, res.fallback),
                b.box,
                res.fallback,
            )
        ordered = [regions[i] for i in sorted(regions)]  # in box order
        if resolve:
            separate_boxes(seg, ordered)
            for r in ordered:
                r.mask = EncodedMask.of(r.mask) if isinstance(r.mask, np.ndarray) else r.mask
        out.regions.extend(ordered)

    def _classless_agreement(self, seg: Segmenter, b: LabeledBox, mask: np.ndarray, schema: Schema) -> float:
        """A box whose label has no engine class (naked GrabCut) has no second opinion of its
        own; its agreement is with the CAM box technique for the project's class whose CAM is
        strongest in the box. 0 when the project has no engine class."""
        classes = sorted({c for lab in schema.brush_labels if (c := self.labels.resolve(lab)) is not None})
        x0, y0, x1, y1 = (int(round(v)) for v in b.box)
        if not classes or x1 <= x0 or y1 <= y0:
            return 0.0
        best = max(classes, key=lambda c: float(seg.raw_class_cam(c)[y0:y1, x0:x1].max(initial=0.0)))
        alt = seg.segment_box(Box(*b.box), best, Technique("fpf", 0.6))
        return 0.0 if alt.fallback else mask_iou(mask, alt.mask)

    def _chunks(self, seg: Segmenter, prompts: list[BoxPrompt]) -> Iterator[tuple[int, MaskResult | Exception]]:
        """(index, result) of every box prompt. Memory bound: at most ``cut_threads`` cuts (half
        as many boxes and their second opinions) run at once, and the caller encodes each mask before the next
        ones start, so a request holds a few full-size masks, not two per box (100 boxes on a
        36 MP image held 7.6 GB). Boxes go class by class and a class's upsampled CAM is dropped
        after its last box (a 40 MP float32 CAM is 160 MB)."""
        order = sorted(range(len(prompts)), key=lambda i: str(prompts[i].voc_class))
        step = max(1, self.settings.cut_threads // 2)  # a box is two cuts (its mask, its second opinion)
        for k in range(0, len(order), step):
            idx = order[k : k + step]
            yield from zip(idx, seg.segment_boxes([prompts[i] for i in idx], agreement=True), strict=True)
            if k + step >= len(order) or prompts[order[k + step]].voc_class != prompts[idx[-1]].voc_class:
                seg.forget_cams()

    def class_regions(self, seg: Segmenter, wanted: list[WantedClass], adapted: Adapted, out: TaskOutcome) -> None:
        """One mask per wanted class; a given probability (of a guessed class) replaces the
        second opinion. The engine runs the classes concurrently, ``cut_threads // 2`` at a time
        (each mask encoded before the next start; ``others`` keeps every tag a rival, as in one call)."""
        techs = [self.technique_for(adapted, "class", w.voc_class) for w in wanted]
        quality = any(w.probability is None for w in wanted)
        classes = [w.voc_class for w in wanted]
        step = max(1, self.settings.cut_threads // 2)

        def chunked() -> Iterator[MaskResult | Exception]:
            for k in range(0, len(wanted), step):
                yield from seg.segment_classes(
                    list(zip(classes[k : k + step], techs[k : k + step], strict=True)),
                    agreement=quality,
                    others=classes[:k] + classes[k + step :],
                )
                seg.forget_cams()  # a 40 MP CAM is 160 MB; the next classes need their own

        for w, tech, res in zip(wanted, techs, chunked(), strict=True):
            if isinstance(res, Exception):
                raise res
            score = honest_score(res.score if w.probability is None else w.probability, res.mask, res.fallback)
            if not res.mask.any():  # a finding ("no pixels of this class here"), not a failure of the task
                reason = res.fallback or "no foreground"
                out.warnings.append(f"class {w.voc_class!r}: empty mask ({reason})")
                out.empty.append({"label": w.label, "voc_class": w.voc_class, "score": round(float(score), 4), "reason": reason})
                continue
            out.regions.append(Region(w.label, w.voc_class, "class", EncodedMask.of(res.mask), tech, score, None, res.fallback))

    def interactive(
        self,
        seg: Segmenter,
        items: list[Any],
        schema: Schema,
        adapted: Adapted,
        out: TaskOutcome,
        previous: Callable[[], list[PredictedRegion]] = list,
    ) -> None:
        h, w = seg.image.shape[:2]
        prompt = interactive_prompt(items, w, h, self.settings.max_pixels)
        label, seeds = prompt.label, prompt.seeds
        self.check_boxes(len(prompt.boxes))
        if prompt.boxes:
            pixel_boxes = [LabeledBox(b.label or label, b.box).to_pixels(w, h) for b in prompt.boxes]
            # Clicks on a boxed object refine the mask camcut answered for that box, not a fresh one
            # (the click loop the evaluator's clicks task measures); only a cut that uses it needs it.
            starts = None
            if not seeds.is_empty() and seg.answers_from_previous:
                answered = previous()
                starts = [last_mask_for_box(answered, b.box, h, w) for b in pixel_boxes]
            self.box_regions(seg, pixel_boxes, adapted, schema, out, seeds, starts)
            return
        if seeds.is_empty():
            raise TaskError("the interactive context has no rectangle, keypoint or brush stroke on the image")
        if not seeds.positive_points and seeds.positive_mask is None:
            self._negative_only(seg, seeds, previous(), adapted, out)
            return
        cls = self.labels.resolve(label) if label else None
        if label and cls is None:
            out.warnings.append(f"label {label!r} has no engine class: GrabCut from the clicks alone")
        tech = self.technique_for(adapted, "class", cls) if cls else self.config.class_technique
        name = self.brush_label(label, cls, schema, out) if label else schema.brush_labels[0] if schema.brush_labels else "object"
        # As for boxes: more clicks on an object refine the mask camcut answered for it, where the
        # cut starts from it (featcut); its newest click mask of the same brush label.
        start = last_mask_for_clicks(previous(), name, h, w) if seg.answers_from_previous else None
        res = seg.segment_seeds(seeds, cls, tech, previous=start)
        if not res.mask.any():
            out.warnings.append(f"no mask from the clicks ({res.fallback or 'empty'}); add a positive click")
            return
        out.regions.append(
            Region(
                name,
                cls,
                "seeds",
                EncodedMask.of(res.mask),
                tech,
                honest_score(res.score, res.mask, res.fallback),
                None,
                res.fallback,
            )
        )

    def _negative_only(
        self, seg: Segmenter, seeds: Seeds, previous: list[PredictedRegion], adapted: Adapted, out: TaskOutcome
    ) -> None:
        """Alt-click alone: cut the clicked part out of the newest mask camcut gave the task that
        contains a negative seed (model/refine.py)."""
        h, w = seg.image.shape[:2]
        _, neg = seeds.rasterize(h, w)
        for r in reversed(previous):
            mask = decode_brush(r.rle, r.height, r.width, h, w)
            if (mask & neg).any():
                tech = self.technique_for(adapted, "class", r.voc_class) if r.voc_class else self.config.class_technique
                new, score = subtract_negatives(seg, mask, seeds, r.voc_class, tech)
                if not new.any():
                    out.warnings.append(f"the negative click removed all of the {r.label!r} mask")
                    return
                out.regions.append(Region(r.label, r.voc_class, "seeds", EncodedMask.of(new), tech, score, r.box, None))
                return
        raise TaskError(
            "a negative click alone needs a mask under it to cut from: no mask camcut predicted for this task"
            " contains the click; add a positive click"
        )
