"""Try the engine on any image: a box or a class tag in, the mask and an overlay PNG out.

camcut IMAGE --box X0 Y0 X1 Y1 [--class dog]   # box task (pixel box, x1/y1 exclusive)
camcut IMAGE --tag dog                         # tag task
camcut IMAGE                                   # tag task for the CNN's predicted classes
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from . import voc
from .config import get_config
from .image import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV, ImageError, decode_image
from .prompts import Box, BoxError
from .segmenter import MaskResult, Segmenter
from .squeezenet import WeightsError
from .techniques import Technique, ThresholdError

OVERLAY_COLOUR = np.array([255, 40, 40], np.float32)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    out = image.astype(np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * OVERLAY_COLOUR
    # A dark outline makes the mask edge visible on any background.
    edge = mask ^ np.roll(mask, 1, 0) | mask ^ np.roll(mask, 1, 1)
    out[edge & mask] = 0
    return out.clip(0, 255).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="camcut", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("image", help="image file (JPEG, PNG, ...)")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--box", nargs=4, type=float, metavar=("X0", "Y0", "X1", "Y1"), help="object box in pixels")
    g.add_argument("--tag", action="append", help="VOC class to segment in the whole image (repeatable)")
    ap.add_argument("--class", dest="cls", help="VOC class of the box (needed by the CAM techniques)")
    ap.add_argument("--technique", help="e.g. 'grabcut', 'fpf 0.6', 'pfpb 0.3', 'cam 0.3' (default: the config's)")
    ap.add_argument("--config", default="featcut", help="engine configuration (default: featcut, as camcut segment)")
    ap.add_argument("--weights", default=None, help="another SqueezeNet 1.1 state_dict (.pth)")
    ap.add_argument("--out", default=None, help="output prefix (default: next to the image)")
    a = ap.parse_args(argv)
    try:
        seg = Segmenter(get_config(a.config), weights=a.weights)
        seg.set_image(decode_image(a.image, max_pixels=int(os.environ.get(MAX_PIXELS_ENV) or DEFAULT_MAX_PIXELS)))
        tech = Technique.parse(a.technique) if a.technique else None
        results: list[tuple[str, MaskResult]] = []
        if a.box:
            if tech is None and a.cls is None:
                tech = Technique("grabcut")
            results.append((a.cls or "box", seg.segment_box(Box(*a.box), a.cls, tech)))
        else:
            tags = a.tag or [s.voc_class for s in seg.predict_classes()]
            if not tags:
                print("the CNN recognises no VOC class in this image; pass --tag or --box", file=sys.stderr)
                return 1
            results.extend((t, seg.segment_class(t, tech)) for t in tags)
    except (ImageError, BoxError, ThresholdError, voc.UnknownClassError, WeightsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    prefix = Path(a.out) if a.out else Path(a.image).with_suffix("")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for name, r in results:
        stem = f"{prefix}.{name}"
        Image.fromarray((r.mask * 255).astype(np.uint8)).save(f"{stem}.mask.png")
        Image.fromarray(overlay(seg.image, r.mask)).save(f"{stem}.overlay.png")
        note = f" (fallback: {r.fallback})" if r.fallback else ""
        print(f"{name}: {r.technique.label}, {r.area} px, score {r.score:.2f}{note} -> {stem}.mask.png, {stem}.overlay.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
