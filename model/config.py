"""Engine configurations: everything that changes masks besides the technique of a call.

How the pieces combine (documented in README "How a mask is made"):

* Box task: outside the box is definite background; inside, the digitized CAM (technique
  thresholds) or, for naked GrabCut, probable foreground everywhere (exactly what
  cv2.GC_INIT_WITH_RECT does). The cut then runs on the whole image (reference) or a window.
* Tag task: the digitized CAM of the whole image is the cut's initial mask.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .cut import CUTS, make_cut
from .techniques import Technique


@dataclass(frozen=True)
class EngineConfig:
    """Everything that changes masks besides the technique; part of the model version."""

    name: str = "reference"
    cnn_max_side: int | None = None  # None: CNN on the full-resolution image (the report)
    cam_norm: str = "image"  # "image" | "box": where the VOC CAM's maximum is taken
    # The VOC CAMs and a tag's class probability (its score's) pool each class's context classes
    # too (model/data/imagenet_to_voc.json "context", voc.cam_members): person's also read ImageNet's
    # garments (WordNet clothing.n.01), since ballplayer, groom and scuba diver are all ImageNet
    # has of a person. Guessing which classes an image shows never does (Segmenter.class_probabilities).
    # False: the members alone (the report).
    cam_context: bool = False
    # The cut algorithm (a name in model.cut.CUTS) and GrabCut's iteration count.
    cut: str = "grabcut"
    grabcut_iterations: int = 1
    # Box cut window: None = the whole image (the report); else the box grown by this fraction
    # of its size on each side (at least CROP_MIN_PX), so the background model is local.
    crop_margin: float | None = None
    # Cut resolution: None = full; else the window is downscaled so its longer side is at
    # most this, and the mask is upsampled (bilinear on the 0/1 mask, threshold 0.5).
    # ``grabcut_max_side`` is for boxes, ``class_grabcut_max_side`` for the whole-image cuts of
    # tags and clicks: those lose far more at low resolution (README "Speed").
    grabcut_max_side: int | None = None
    class_grabcut_max_side: int | None = None
    box_technique: Technique = field(default_factory=lambda: Technique("fpf", 0.6))
    class_technique: Technique = field(default_factory=lambda: Technique("pfpb", 0.3))
    # Resolution of the second-opinion cut behind ``agreement=True`` scores (None: the same as
    # the mask's own cut). The score only ranks masks, and at 96 px it ranks them almost as well
    # as at full size (Spearman 0.449 vs 0.461 on 273 VOC boxes) for a quarter of the cost.
    score_max_side: int | None = None
    # Boxes with ``agreement=True``: the score averages the agreement with the cut's own confidence
    # in its answer (model/results.py agreement_score), where the cut reports one (featcut does).
    score_confidence: bool = False
    # Boxes: a box says an object is there, so a cut that keeps no pixel of it (a weak colour
    # contrast the smoothness term wins: 4 of the 579 VOC boxes with featcut) answers the box's CAM
    # at least this fraction of its peak in the box (fallback "cut_empty"), the tags' convention
    # (class_tag_fallback); None: the empty mask (the report). Box answers only: after clicks an
    # empty mask is the annotator's doing.
    box_empty_fallback: float | None = None
    # Tags: the other classes tagged on the image compete for pixels. A pixel where another
    # tagged class's (raw) CAM is higher cannot be foreground of this one (it becomes probable
    # background), since a pixel has one class. The report segments each tag on its own (False).
    class_exclusive: bool = False
    # Tags: cut window = the bounding box of the digitized CAM's foreground grown by this
    # fraction of its size on each side (None: the whole image, the report). As for boxes, a
    # local window gives the cut a background model of the object's surroundings.
    class_window_margin: float | None = None
    # Tags: each tag's mask is gated by the shares of the image's tags after their CAMs are
    # propagated by a random walk on SqueezeNet's fire3/fire5 features, background a label of
    # its own (model/tagprop.py; 37.3 vs 33.8 tag mIoU on the 205 VOC images, /work/notes/tags-results.md).
    class_tagprop: bool = False
    # Tags (with class_tagprop): CAMs of more CNN passes at these multiples of the first pass's
    # side averaged into the propagated scores (model/tagprop.py TagParams.scales).
    class_tag_scales: tuple[float, ...] = ()
    # Tags (with class_tagprop): a tag the gate leaves empty answers its best evidence, down to its
    # CAM at least this fraction of its peak (model/tagprop.py TagParams.fallback); None: empty.
    class_tag_fallback: float | None = None
    # Tags (with class_tag_scales): the walk on the first extra pass's grid and features
    # (model/tagprop.py TagParams.walk_scaled).
    class_tag_walk_scaled: bool = False
    # Tags (with class_tagprop): the keep gate at least this fraction of the tag's peak share too
    # (model/tagprop.py TagParams.keep_rel); None: the absolute keep alone.
    class_tag_keep_rel: float | None = None
    # Tags (with class_tagprop): the gated mask re-cut by the box core (``cut``) on its bounding
    # box, the mask as the cut's previous answer (model/segmenter.py Segmenter._recut_tag).
    class_tag_recut: bool = False
    # Tags (with class_tagprop): the score is the answer's support by the propagated shares
    # averaged with the class's probability (model/results.py tag_support_score); False: the
    # mean CAM in the mask.
    class_tag_support_score: bool = False

    def __post_init__(self) -> None:
        if self.cam_norm not in ("image", "box"):
            raise ValueError(f"cam_norm must be 'image' or 'box', got {self.cam_norm!r}")
        if self.cut not in CUTS:
            raise ValueError(f"cut must be one of {', '.join(CUTS)}, got {self.cut!r}")
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
        """``name:field=value:...`` over every field, so a new field cannot be left out of it, and
        the cut's own settings (``Cut.version_key``: featcut's FeatCutParams change masks too)."""
        rest = [f"{f.name}={_key_value(getattr(self, f.name))}" for f in dataclasses.fields(self) if f.name != "name"]
        cut = make_cut(self).version_key
        return ":".join((self.name, *rest, *([cut] if cut else [])))


def _key_value(v: object) -> str:
    """A field's value in the version key: dataclasses (techniques) field by field, floats exact."""
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return "/".join(_key_value(getattr(v, f.name)) for f in dataclasses.fields(v))
    return repr(v) if isinstance(v, float) else str(v)


REFERENCE = EngineConfig()

# Named configurations, selectable by name in the evaluator, the CLI and the backend.
# "default": the configuration the backend served before "featcut" (README "Results" and "Speed" give the
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
# "featcut": the box / click core of model/featcut.py behind the cut seam: per-image colour
# GMMs (the foreground's first fit on the CAM's core, its peak a hint only; one fit + cut round
# from a box, re-fitted at each click; a box's first answer also pays for foreground joined to the
# ring outside the box by a smooth path, unless that takes out > 30% of it) and a contrast-sensitive
# Potts term, solved exactly by max-flow,
# the box's window 10% around it at <= 160 px; clicks pull their SqueezeNet-hypercolumn
# look-alikes toward their label, starting from the previous mask. Settings in FeatCutParams,
# chosen on both halves of the 205 VOC images (README "The feature cut"). Tags: default's
# GrabCut masks gated by CAMs spread over SqueezeNet features (class_tagprop, model/tagprop.py);
# clicks without a box: default's GrabCut first, featcut refining it. The backend serves it
# (CAMCUT_CONFIG's default): it beats "default" on boxes, tags and clicks (README "The feature cut").
FEATCUT = dataclasses.replace(
    DEFAULT,
    name="featcut",
    cut="featcut",
    cam_context=True,
    crop_margin=0.10,
    grabcut_max_side=160,
    class_tagprop=True,
    class_tag_scales=(1.5,),
    class_tag_fallback=0.5,
    box_empty_fallback=0.5,
    class_tag_walk_scaled=True,
    class_tag_keep_rel=0.5,
    class_tag_recut=True,
    class_tag_support_score=True,
    score_confidence=True,
    # The box's second opinion at <= 48 px, its GMMs without EM rounds (FeatCutParams.
    # score_gmm_iterations 0): half its CPU (16.1 -> 7.7 ms a box), the score's Spearman rho with
    # the true IoU 0.564 -> 0.594 (A 0.544 -> 0.557, B 0.579 -> 0.633) on the 579 boxes; the
    # cheapest of six variants no worse on either half by more than a bootstrap s.e. (README "Speed").
    score_max_side=48,
)
# Read-only: an experiment builds its own EngineConfig and passes it down instead of registering it.
CONFIGS: Mapping[str, EngineConfig] = MappingProxyType(
    {"reference": REFERENCE, "default": DEFAULT, "quality": QUALITY, "featcut": FEATCUT}
)


def get_config(name: str) -> EngineConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        raise ValueError(f"unknown engine configuration {name!r}; choose one of {', '.join(CONFIGS)}") from None
