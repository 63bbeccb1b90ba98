"""The clicks task through the engine, with the click prior's hypercolumns from a CNN pass on the
box window's crop instead of the whole image's 320 px pass (the outside experiment's features,
../shared/findings/clicks.md: "a CNN pass on a 320-px crop of the box window").

    CROP_SIDE=320 CROP_MAX_FRAC=1.0 .venv/bin/python tools/experiments/clicks_crop.py --limit 60 --workers 2

CROP_SIDE unset or 0: the served engine (the control). FC="key=value,..." overrides FeatCutParams
fields (values as Python literals). The click switches of README "The feature cut" footnote (12)
(click_unary, neg_sigma, fit_sim, far_sim) ran at commit 87a07f1 and are not kept. CROP_MAX_FRAC: only windows whose longer
side is at most this fraction of the image's longer side get the crop pass (a window near the
whole image gains nothing from it). Everything else is ``python -m evaluator.clicks``.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from evaluator import clicks
from model import cut as C
from model import features as F
from model.featcut import FeatCutCut, FeatCutParams
from model.segmenter import Segmenter

CROP_SIDE = int(os.environ.get("CROP_SIDE", "0") or 0)
CROP_MAX_FRAC = float(os.environ.get("CROP_MAX_FRAC", "1.0"))

_orig_window = F.PixelFeatures.window
_orig_set_image = Segmenter.set_image


def _crop_window(self: F.PixelFeatures, window: tuple[int, int, int, int] | None, size: tuple[int, int]) -> np.ndarray:
    img = getattr(self, "_crop_image", None)
    if window is None or img is None:
        return _orig_window(self, window, size)
    x0, y0, x1, y1 = window
    h, w = img.shape[:2]
    if max(x1 - x0, y1 - y0) > CROP_MAX_FRAC * max(h, w):
        return _orig_window(self, window, size)
    # One PixelFeatures per crop: its own pass, per-crop PCA, resampling and window cache.
    crops = self.__dict__.setdefault("_crops", {})
    if window not in crops:
        crops[window] = F.PixelFeatures.of_image(self._crop_net, img[y0:y1, x0:x1], CROP_SIDE, dims=self.dims_per_layer)  # type: ignore[attr-defined]
    return crops[window].window(None, size)


def _set_image(self: Segmenter, image: np.ndarray, cnn: object = None) -> object:
    out = _orig_set_image(self, image, cnn)  # type: ignore[arg-type]
    if self._features is not None:
        self._features._crop_image = self._image  # type: ignore[attr-defined]
        self._features._crop_net = self.net.net  # type: ignore[attr-defined]
    return out


def _params(spec: str, extra: dict | None = None) -> FeatCutParams:
    """FeatCutParams from FC's "key=value,..." (Python literals) and experiment switches ``extra``."""
    names = {f.name for f in dataclasses.fields(FeatCutParams)} - {"extra"}
    kw: dict = {}
    for item in filter(None, spec.split(",")):
        k, v = item.split("=", 1)
        if k not in names:  # a switch that is not kept would otherwise run the control silently
            raise SystemExit(f"FC: {k!r} is not a FeatCutParams field")
        kw[k] = ast.literal_eval(v)
    return FeatCutParams(**kw, extra=extra or {})


if os.environ.get("FC"):
    _PARAMS = _params(os.environ["FC"])  # at import: a bad key stops the run before any work
    C.CUTS["featcut"] = lambda config: FeatCutCut(_PARAMS)
if CROP_SIDE > 0:  # at import: spawned workers import this module too
    F.PixelFeatures.window = _crop_window  # type: ignore[method-assign]
    Segmenter.set_image = _set_image  # type: ignore[method-assign,assignment]


def run_clicks(argv: list[str]) -> int:
    """The engine's clicks task (featcut, the shared VOC images unless told) with this process's patches."""
    args = list(argv)
    if "--configs" not in args and "--config" not in args:
        args += ["--configs", "featcut"]
    args += ["--voc", str(Path(__file__).resolve().parents[2].parent / "shared/voc2012/VOC2012")] if "--voc" not in args else []
    return clicks.main(args)


if __name__ == "__main__":
    sys.exit(run_clicks(sys.argv[1:]))
