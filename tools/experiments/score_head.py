"""Issue 14: the score model kept alone (model/head.py ``score_head``): does its image-grouped
cross-validated Spearman rho (``score_rho``, what the gate checks) foretell the rho it gets on the
other half of the images?

    .venv/bin/python tools/experiments/score_head.py [--cache FILE.npz] [--points 50,100,200] [--alternatives]

Every object of the 205 shared images is collected once as a correction (evaluator.learn's
``correction_samples``: the served featcut box answer, its agreement and its true IoU), halves A / B
by even / odd position in the split list. For each direction and number of corrections n: the CV
rho of the learnt score and of the agreement on the first n of one half, and the rho of a score
model fitted on those n on all of the other half. ``--alternatives`` (session 15) adds, on the other
half, two score models not served: the class offsets taken on the residuals of the training-free
score calibrated by a line fitted on the n corrections ("resid"), and the answer's in-box fill
against its class's corrected fill, min / max of the two, shrunk like the class prior ("fill").
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from evaluator.dataset import VocDataset
from evaluator.learn import correction_samples
from model.engine import Segmenter, get_config
from model.head import SCORE_SHRINK, ObjectSample, sample_score, score_head, score_rho, training_free_score

VOC_ROOT = os.environ.get("CAMCUT_VOC", "/work/shared/voc2012/VOC2012")
FIELDS = ("voc_class", "agreement", "core_iou", "group")


def collect(cache: Path | None) -> dict[int, list[ObjectSample]]:
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            n = int(z["n"])
            out: dict[int, list[ObjectSample]] = {0: [], 1: []}
            for i in range(n):
                half = int(z[f"half_{i}"])
                meta = z[f"meta_{i}"]
                out[half].append(
                    ObjectSample(str(meta[0]), z[f"x_{i}"], z[f"y_{i}"], float(meta[1]), float(meta[2]), group=str(meta[3]))
                )
            return out
    ds = VocDataset(VOC_ROOT)
    seg = Segmenter(get_config("featcut"))
    out = {0: [], 1: []}
    for k, image_id in enumerate(ds.ids("train")):
        out[k % 2] += correction_samples(seg, ds.load(image_id))
    if cache is not None:
        arrays: dict[str, np.ndarray] = {}
        flat = [(h, s) for h in (0, 1) for s in out[h]]
        for i, (h, s) in enumerate(flat):
            arrays[f"x_{i}"], arrays[f"y_{i}"], arrays[f"half_{i}"] = s.x, s.y, np.array(h)
            arrays[f"meta_{i}"] = np.array([s.voc_class, repr(s.agreement), repr(s.core_iou), s.group])
        np.savez(cache, n=np.array(len(flat)), **arrays)  # type: ignore[arg-type]  # numpy's stub: **kwds as allow_pickle
    return out


def _shrunk_offsets(classes: list[str], values: np.ndarray) -> dict[str, float]:
    """Each class's mean of ``values`` minus the project's, shrunk as the served class prior is."""
    mean, by = float(np.mean(values)), {}
    for c, v in zip(classes, values, strict=True):
        by.setdefault(c, []).append(float(v))
    return {c: (sum(v) + SCORE_SHRINK * mean) / (len(v) + SCORE_SHRINK) - mean for c, v in by.items()}


def _fill(s: ObjectSample, truth: bool) -> float:
    x = s.x.astype(np.float32)
    inbox = x[:, 3] > 0.5
    return float(np.count_nonzero((s.y if truth else x[:, 1] > 0) & inbox) / max(1, np.count_nonzero(inbox)))


def alternatives(fit: list[ObjectSample], other: list[ObjectSample]) -> str:
    """Other-half rho of the "resid" and "fill" score models fitted on ``fit`` (module docstring)."""
    tf, y = np.array([training_free_score(s) for s in fit]), np.array([s.core_iou for s in fit])
    b, a = np.polyfit(tf, y, 1)
    off = _shrunk_offsets([s.voc_class for s in fit], y - (a + b * tf))
    truth = [s.core_iou for s in other]
    resid = [a + b * training_free_score(s) + off.get(s.voc_class, 0.0) for s in other]
    fills = np.array([_fill(s, True) for s in fit])
    mean = float(fills.mean())
    cls_fill = {c: mean + v for c, v in _shrunk_offsets([s.voc_class for s in fit], fills).items()}
    ratio = []
    for s in other:
        got, want = _fill(s, False), cls_fill.get(s.voc_class, mean)
        ratio.append(min(got, want) / max(got, want, 1e-6))
    return f"{spearmanr(truth, resid).statistic:.3f} / {spearmanr(truth, ratio).statistic:.3f}"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--points", default="50,100,200")
    ap.add_argument("--alternatives", action="store_true", help="also the resid / fill score models (session 15)")
    a = ap.parse_args(argv)
    halves = collect(a.cache)
    print(f"objects: A {len(halves[0])}, B {len(halves[1])}")
    extra = " other half: resid / fill |" if a.alternatives else ""
    head = "| learn -> score | corrections | CV rho learnt / training-free | other half: learnt / training-free / agreement |"
    print(head + extra)
    print("|---|---:|---|---|" + ("---|" if a.alternatives else ""))
    for src, dst in ((0, 1), (1, 0)):
        for n in [int(p) for p in a.points.split(",")]:
            fit = halves[src][:n]
            cv = score_rho(fit)
            head = score_head(fit)
            truth = [s.core_iou for s in halves[dst]]
            learnt = spearmanr(truth, [sample_score(head, s) for s in halves[dst]]).statistic
            free = spearmanr(truth, [training_free_score(s) for s in halves[dst]]).statistic
            agreement = spearmanr(truth, [s.agreement for s in halves[dst]]).statistic
            other = f"{learnt:.3f} / {free:.3f} / {agreement:.3f}"
            alt = f" {alternatives(fit, halves[dst])} |" if a.alternatives else ""
            print(f"| {'AB'[src]} -> {'AB'[dst]} | {len(fit)} | {cv[0]:.3f} / {cv[1]:.3f} | {other} |{alt}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
