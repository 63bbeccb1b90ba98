"""Issue 12 session 6: empty tag answers and their fallback, on the cached records, both halves.

    .venv/bin/python tools/experiments/tags_empty.py [STEP] [NAMES]

featcut's gate (model/tagprop.py: today's mask where share >= 0.3, plus share >= 0.5) leaves some
present tags with nothing: with K tags the K + 1 shares dilute (4 tags: every share < 0.3 on
2007_000648). Variants: fallbacks used only where the gate leaves nothing, and gates on the share
of the tag against background alone. Prints mIoU on all / A / B / E / O, the number of empty
(image, tag) pairs, per-class IoU and area ratio, CPU per image.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import types

import cv2
import numpy as np
import torch
from tags_bg import BASE, scores
from tags_common import evaluate, per_class, report

from model.tagprop import TagParams, affinity_features, gate, initial_scores, multiscale, propagate, shares

MS = ((1.5, False),)  # featcut's second scale (the cached records' 320 px image upsampled)
EMPTY: dict[str, int] = {}
PAIRS: dict[str, int] = {}
_S: dict[str, np.ndarray] = {}


def _shares(rec, how: str = "") -> np.ndarray:
    """The tags' shares at the image size: featcut's, or with ``how`` = "grid G rR" (a finer
    walk grid on the first pass) or "own rR" (the walk on the 1.5x pass's own fire3 / fire5)."""
    if (rec.iid, how) not in _S:
        if not any(k[0] == rec.iid for k in _S):
            _S.clear()
        if not how:
            sc = scores(rec, BASE, ms=MS)
        elif how.startswith("grid"):
            g, r = how.split()[1:]
            sc = scores(rec, dataclasses.replace(BASE, grid=int(g), radius=int(r[1:])), ms=MS)
        else:
            sc = own_scores(rec, int(how.split()[1][1:]))
        _S[rec.iid, how] = shares(sc, rec.gt.shape)
    return _S[rec.iid, how]


def own_scores(rec, radius: int) -> np.ndarray:
    """The walk on the grid of the 1.5x pass (1/8 of 480 px) with that pass's fire3 / fire5."""
    import tags_bg
    from tags_cache import fire_maps

    tags_bg.cams_at(rec, 1.5, False)  # builds tags_bg.CAMNET
    h, w = rec.small.shape[:2]
    big = cv2.resize(rec.small, (round(w * 1.5), round(h * 1.5)), interpolation=cv2.INTER_LINEAR)
    fm = fire_maps(types.SimpleNamespace(net=tags_bg.CAMNET), big)
    p = dataclasses.replace(BASE, radius=radius)
    gs = (max(2, int(np.ceil(big.shape[1] / p.grid))), max(2, int(np.ceil(big.shape[0] / p.grid))))
    idx = [t - 1 for t in rec.tags]
    cams = multiscale([rec.voc_cams[idx], tags_bg.cams_at(rec, 1.5, False)[idx]], gs) if idx else rec.voc_cams[idx]
    sc = initial_scores(cams, gs, p.alpha)
    feat = affinity_features([fm["f3"].astype(np.float32), fm["f5"].astype(np.float32)], gs)
    return propagate(sc, feat, p)


def peak_region(win: np.ndarray, t: np.ndarray, k: int) -> np.ndarray:
    """The connected region where tag k wins (largest share), around its share's peak."""
    n, comp = cv2.connectedComponents((win == k + 1).astype(np.uint8), connectivity=8)
    y, x = np.unravel_index(int(np.argmax(np.where(win == k + 1, t, -1))), t.shape)
    return comp == comp[y, x] if win[y, x] == k + 1 else np.zeros_like(t, bool)


def cam(rec, k: int) -> np.ndarray:
    """The tag's CAM at the image size divided by its peak (the Segmenter's class_cam)."""
    h, w = rec.gt.shape
    c = cv2.resize(rec.voc_cams[rec.tags[k] - 1], (w, h), interpolation=cv2.INTER_LINEAR).clip(min=0)
    return c / max(float(c.max()), 1e-12)


def extent(t: np.ndarray, c: float, margin: float) -> np.ndarray:
    """Boxes of the connected regions where the share is at least ``c`` of its peak, each grown
    by ``margin`` of its side: the box-like extent of the tag's evidence."""
    out = np.zeros(t.shape, bool)
    if t.max() <= 0:
        return ~out
    n, _, stats, _ = cv2.connectedComponentsWithStats((t >= c * t.max()).astype(np.uint8), connectivity=8)
    H, W = t.shape
    for x, y, w, h, _a in stats[1:]:
        dx, dy = round(margin * w), round(margin * h)
        out[max(0, y - dy) : min(H, y + h + dy), max(0, x - dx) : min(W, x + w + dx)] = True
    return out


def boxed(c: float, margin: float, inner: str = "chain cam 0.5"):
    base = served(inner)

    def fn(rec) -> np.ndarray:
        g = base(rec)
        sh = _shares(rec)
        return np.stack([m & extent(sh[k + 1], c, margin) if m.any() else m for k, m in enumerate(g)]) if len(g) else g

    return fn


def served(fallback: str = "", p: TagParams = BASE, pair: bool = False, scaled: str = "", how: str = ""):
    """featcut's gate, then ``fallback`` for each tag it leaves empty."""

    def fn(rec) -> np.ndarray:
        sh = _shares(rec, how)
        if pair:  # each tag's share against background alone: s_k / (s_k + s_bg)
            tags = sh[1:] / np.maximum(sh[1:] + sh[:1], 1e-12)
            g = (rec.base & (tags >= p.keep)) | (tags >= p.add)
        elif scaled:  # thresholds x 2 / (K + 1): with one tag today's, the shares dilute with more
            f = 2.0 / len(sh)
            keep, add = p.keep * f, (p.add * f if scaled == "both" else p.add)
            g = (rec.base & (sh[1:] >= keep)) | (sh[1:] >= add)
            if scaled == "both":
                g &= (sh.argmax(0) == np.arange(1, len(sh))[:, None, None]) | (sh[1:] >= p.add)
        else:
            g = gate(rec.base, sh, p)
        win = sh.argmax(0)
        for k in range(len(rec.tags)):
            if g[k].any() or not fallback:
                continue
            t = sh[k + 1]
            if fallback == "argmax":  # where the tag is the label with the largest share
                g[k] = win == k + 1
            elif fallback == "base&argmax":
                g[k] = rec.base[k] & (win == k + 1)
            elif fallback == "base&bg":  # today's mask where the tag beats background
                g[k] = rec.base[k] & (t > sh[0])
            elif fallback == "base&argmax|argmax":
                g[k] = rec.base[k] & (win == k + 1)
                if not g[k].any():
                    g[k] = win == k + 1
            elif fallback == "relmax":  # the tag's share at least half its own peak
                g[k] = t >= 0.5 * t.max()
            elif fallback == "base&relmax":
                g[k] = rec.base[k] & (t >= 0.5 * t.max())
            elif fallback.startswith("chain"):  # today's mask where the tag wins, else its peak region
                g[k] = rec.base[k] & (win == k + 1)
                if not g[k].any() and fallback == "chain peak":
                    g[k] = peak_region(win, t, k)
                elif not g[k].any() and fallback == "chain peak half":
                    g[k] = peak_region(win, t, k) & (t >= 0.5 * t.max())
                elif not g[k].any() and fallback.startswith("chain cam"):
                    # the tag's CAM at least ``c`` of its peak where the tag wins, else that CAM region alone
                    c = float(fallback.split()[-1])
                    g[k] = (cam(rec, k) >= c) & (win == k + 1)
                    if not g[k].any() and not fallback.startswith("chain camwin"):
                        g[k] = cam(rec, k) >= c
                elif not g[k].any() and fallback == "chain base":
                    g[k] = rec.base[k]
            elif fallback == "base":
                g[k] = rec.base[k]
        return g

    return fn


VARIANTS = {
    "kept (featcut)": served(),
    "fb argmax": served("argmax"),
    "fb base&argmax": served("base&argmax"),
    "fb base&argmax|argmax": served("base&argmax|argmax"),
    "fb base&bg": served("base&bg"),
    "fb relmax": served("relmax"),
    "fb base&relmax": served("base&relmax"),
    "fb base": served("base"),
    "pair gate": served(pair=True),
    "chain peak": served("chain peak"),
    "chain peak half": served("chain peak half"),
    "chain base": served("chain base"),
    "chain cam 0.3": served("chain cam 0.3"),
    "chain cam 0.5": served("chain cam 0.5"),
    "chain cam 0.7": served("chain cam 0.7"),
    "chain camwin 0.5": served("chain camwin 0.5"),
    "extent 0.5 0.1": boxed(0.5, 0.1),
    "extent 0.5 0.25": boxed(0.5, 0.25),
    "extent 0.7 0.25": boxed(0.7, 0.25),
    "extent 0.3 0.1": boxed(0.3, 0.1),
    "walk grid 4 r4": served("chain cam 0.5", how="grid 4 r4"),
    "walk grid 4 r6": served("chain cam 0.5", how="grid 4 r6"),
    "walk own 1.5x r4": served("chain cam 0.5", how="own r4"),
    "walk own 1.5x r6": served("chain cam 0.5", how="own r6"),
    "scaled keep": served(scaled="keep"),
    "scaled both": served(scaled="both"),
    "scaled keep chain peak": served("chain peak", scaled="keep"),
    "scaled both chain peak": served("chain peak", scaled="both"),
    "pair gate fb base&argmax": served("base&argmax", pair=True),
}
TIMES: dict[str, list[float]] = {}


def counted(name, fn):
    def g(rec):
        t0 = time.process_time()
        out = fn(rec)
        TIMES.setdefault(name, []).append(time.process_time() - t0)
        EMPTY[name] = EMPTY.get(name, 0) + int(sum(not m.any() for m in out))
        PAIRS[name] = PAIRS.get(name, 0) + len(out)
        return out

    return g


def main() -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    step = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    names = [n for n in VARIANTS if len(sys.argv) <= 2 or any(k in n for k in sys.argv[2].split(","))]
    counts = evaluate({n: counted(n, VARIANTS[n]) for n in names}, step=step)
    report(counts)
    for n, by in counts.items():
        print(f"{n}: empty {EMPTY[n]} of {PAIRS[n]}; {per_class(by['all'], 1)}")
    for n, t in TIMES.items():
        print(f"{n:30s} CPU p50 {1000 * np.median(t):.0f} ms (gate + fallback; the shares cached once per image)")


if __name__ == "__main__":
    main()
