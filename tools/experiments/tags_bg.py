"""Issue 12 session 5 tag levers on the cached records (tags_cache.py), both halves.

    .venv/bin/python tools/experiments/tags_bg.py [STEP] [NAMES]

Variants of model/tagprop.py's background label, affinity and a multi-label cut; prints
class-wise binary mIoU on all / A / B / E / O like tags_prop.py.
"""

from __future__ import annotations

import dataclasses
import sys
import time

import cv2
import numpy as np
import torch
from tags_common import ROOT, Rec, evaluate, per_class, report

sys.path.insert(0, str(ROOT))
import tags_cut

from model import voc
from model.graphcut import potts_weights
from model.squeezenet import load_squeezenet
from model.tagprop import TagParams, affinity_features, gate, initial_scores, propagate, resize_maps, shares

BASE = TagParams()
NET = load_squeezenet(None)[0].eval()
VOC_IDX = sorted({i for c in voc.VOC_CLASSES for i in voc.imagenet_members(c)})
NONVOC = np.array([i for i in range(1000) if i not in set(VOC_IDX)])


def cam1000(rec: Rec) -> np.ndarray:
    with torch.inference_mode():
        f = torch.from_numpy(rec.f9)[None]
        return NET.classifier[2](NET.classifier[1](f))[0].numpy()


def gsize(rec: Rec, p: TagParams) -> tuple[int, int]:
    h, w = rec.small.shape[:2]
    return (max(2, int(np.ceil(w / p.grid))), max(2, int(np.ceil(h / p.grid))))


CAMNET = None
_MS: dict[tuple[str, float, bool], np.ndarray] = {}


def cams_at(rec: Rec, scale: float, flip: bool) -> np.ndarray:
    """(20, h, w) VOC CAMs of the image at ``scale`` x the CNN input side (flipped back if ``flip``)."""
    global CAMNET
    from model.cnn import CamNet, pool_voc_cams

    if CAMNET is None:
        CAMNET = CamNet()
    key = (rec.iid, scale, flip)
    if key not in _MS:
        img = rec.small[:, ::-1] if flip else rec.small
        h, w = img.shape[:2]
        img = cv2.resize(np.ascontiguousarray(img), (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR)
        c = pool_voc_cams(CAMNET.forward(img)[1])
        _MS[key] = c[:, :, ::-1].copy() if flip else c
    return _MS[key]


def scores(
    rec: Rec,
    p: TagParams,
    nonvoc: str = "",
    topk: int = 5,
    layers: str = "35",
    colour: float = 0.0,
    ms: tuple[tuple[float, bool], ...] = (),
) -> np.ndarray:
    cams = rec.voc_cams[[t - 1 for t in rec.tags]]
    gs = gsize(rec, p)
    if ms and len(cams):
        acc = [resize_maps(np.maximum(cams, 0), gs)]
        for sc, fl in ms:
            acc.append(resize_maps(np.maximum(cams_at(rec, sc, fl)[[t - 1 for t in rec.tags]], 0), gs))
        acc = [a / np.maximum(a.reshape(len(a), -1).max(1), 1e-6)[:, None, None] for a in acc]
        cams = np.mean(acc, 0)
    s = initial_scores(cams, gs, p.alpha)
    if nonvoc:
        c = cam1000(rec)
        order = NONVOC[np.argsort(-rec.logits[NONVOC])[:topk]]
        n = resize_maps(np.maximum(c[order], 0), gs).max(0)
        peak = max(float(resize_maps(np.maximum(cams, 0), gs).max()), 1e-6)
        if nonvoc == "raw":  # the non-VOC evidence on the tags' own scale
            s[0] = np.maximum(s[0], np.clip(n / peak, 0, 1))
        elif nonvoc == "own":  # its own max
            s[0] = np.maximum(s[0], n / max(float(n.max()), 1e-6))
    lay = {"3": rec.f3, "5": rec.f5, "9": rec.f9}
    feat = affinity_features([lay[k] for k in layers], gs)
    if colour > 0:
        lab = cv2.cvtColor(cv2.resize(rec.small, gs, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2LAB).astype(np.float32)
        lab = lab.transpose(2, 0, 1) / 255.0 * colour
        feat = np.concatenate([feat, lab - lab.mean((1, 2), keepdims=True)])
        feat = feat / (np.linalg.norm(feat, axis=0, keepdims=True) + 1e-6)
    return propagate(s, np.ascontiguousarray(feat, np.float32), p) if p.steps else s


def gated(p: TagParams = BASE, bgw: float = 1.0, **kw):
    def fn(rec: Rec) -> np.ndarray:
        s = scores(rec, p, **kw)
        s[0] *= bgw
        return gate(rec.base, shares(s, rec.gt.shape), p)

    return fn


def mcut(p: TagParams = BASE, lam: float = 2.0, w_base: float = 1.0, max_side: int = 160, bgw: float = 1.0, **kw):
    """One multi-label cut over {background, tags}: unary -log share - w_base * today's mask."""

    def fn(rec: Rec) -> np.ndarray:
        H, W = rec.gt.shape
        s = scores(rec, p, **kw)
        s[0] *= bgw
        sc = min(1.0, max_side / max(H, W))
        ws = (max(2, round(W * sc)), max(2, round(H * sc)))
        prob = shares(s, (ws[1], ws[0]))
        base = resize_maps(rec.base.astype(np.float32), ws) if len(rec.base) else np.zeros((0, ws[1], ws[0]), np.float32)
        unary = -np.log(np.maximum(prob, 1e-4))
        unary[1:] -= w_base * base
        img = cv2.resize(cv2.cvtColor(rec.small, cv2.COLOR_RGB2LAB), ws, interpolation=cv2.INTER_AREA).astype(np.float32)
        lab = unary.argmin(0)
        if lam > 0:
            lab = tags_cut.alpha_expansion(unary, potts_weights(img, lam), lab, 2)
        lab = cv2.resize(lab.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST)
        return np.stack([lab == k + 1 for k in range(len(rec.tags))]) if len(rec.tags) else rec.base

    return fn


def refine(
    p: TagParams = BASE,
    lam: float = 4.0,
    w_share: float = 1.0,
    w_gate: float = 0.0,
    em: int = 2,
    max_side: int = 160,
    fg_conf: float = 0.5,
    bg_conf: float = 0.2,
    bgw: float = 1.0,
    **kw,
):
    """The gated mask re-cut per tag: colour GMMs fitted to the share's confident pixels, max-flow."""
    from model.graphcut import fit_gmm, gmm_loglik, min_cut

    def fn(rec: Rec) -> np.ndarray:
        H, W = rec.gt.shape
        s = scores(rec, p, **kw)
        s[0] *= bgw
        full = shares(s, (H, W))
        g = gate(rec.base, full, p)
        sc = min(1.0, max_side / max(H, W))
        ws = (max(2, round(W * sc)), max(2, round(H * sc)))
        sh = shares(s, (ws[1], ws[0]))
        img = cv2.resize(cv2.cvtColor(rec.small, cv2.COLOR_RGB2LAB), ws, interpolation=cv2.INTER_AREA).astype(np.float32)
        x = img.reshape(-1, 3)
        pair = potts_weights(img, lam)
        out = []
        for k in range(len(rec.tags)):
            gk = cv2.resize(g[k].astype(np.uint8), ws, interpolation=cv2.INTER_NEAREST).astype(bool)
            st = sh[k + 1]
            fg = gk & (st >= fg_conf)
            bg = ~gk & (st < bg_conf)
            if fg.sum() < 20 or bg.sum() < 20:
                out.append(g[k])
                continue
            lab = gk
            for it in range(em):
                fw = (fg if it == 0 else lab).ravel().astype(np.float64)
                bw = (bg if it == 0 else ~lab).ravel().astype(np.float64)
                if fw.sum() < 20 or bw.sum() < 20:
                    break
                lf = gmm_loglik(x, fit_gmm(x, fw)).reshape(st.shape)
                lb = gmm_loglik(x, fit_gmm(x, bw)).reshape(st.shape)
                cf = -lf - w_share * np.log(np.maximum(st, 1e-4)) - w_gate * gk
                cb = -lb - w_share * np.log(np.maximum(1 - st, 1e-4))
                lab = min_cut(cf, cb, pair)
            out.append(cv2.resize(lab.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST).astype(bool))
        return np.stack(out) if out else rec.base

    return fn


R = dataclasses.replace
VARIANTS = {
    "kept": gated(),
    "nonvoc raw top5": gated(nonvoc="raw"),
    "nonvoc own top5": gated(nonvoc="own"),
    "nonvoc raw top20": gated(nonvoc="raw", topk=20),
    "bg x1.5": gated(bgw=1.5),
    "bg x2": gated(bgw=2.0),
    "bg x0.7": gated(bgw=0.7),
    "beta 4": gated(R(BASE, beta=4.0)),
    "beta 16": gated(R(BASE, beta=16.0)),
    "steps 8": gated(R(BASE, steps=8)),
    "steps 32": gated(R(BASE, steps=32)),
    "colour 0.5": gated(colour=0.5),
    "colour 1": gated(colour=1.0),
    "combo bg1.5 steps8 colour1": gated(R(BASE, steps=8), bgw=1.5, colour=1.0),
    "ms 1.5": gated(ms=((1.5, False),)),
    "ms flip": gated(ms=((1.0, True),)),
    "ms 1.5 + flip": gated(ms=((1.5, False), (1.0, True))),
    "ms 0.5": gated(ms=((0.5, False),)),
    "ms 2": gated(ms=((2.0, False),)),
    "ms 1.5, bg x1.5": gated(ms=((1.5, False),), bgw=1.5),
    "ms 1.5, steps 8": gated(R(BASE, steps=8), ms=((1.5, False),)),
    "ms 1.5, beta 16": gated(R(BASE, beta=16.0), ms=((1.5, False),)),
    "ms 1.5 + flip, bg x1.5": gated(ms=((1.5, False), (1.0, True)), bgw=1.5),
    "refine lam4 ws1": refine(),
    "refine lam4 ws2": refine(w_share=2.0),
    "refine lam4 ws1 wg1": refine(w_gate=1.0),
    "refine lam8 ws1": refine(lam=8.0),
    "mcut lam2 wb1": mcut(),
    "mcut lam2 wb2": mcut(w_base=2.0),
    "mcut lam4 wb1": mcut(lam=4.0),
    "mcut lam0 wb1": mcut(lam=0.0),
}
TIMES: dict[str, list[float]] = {}


def timed(name, fn):
    def g(rec):
        t0 = time.process_time()
        out = fn(rec)
        TIMES.setdefault(name, []).append(time.process_time() - t0)
        return out

    return g


def main() -> None:
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    step = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    names = [n for n in VARIANTS if len(sys.argv) <= 2 or any(k in n for k in sys.argv[2].split(","))]
    counts = evaluate({n: timed(n, VARIANTS[n]) for n in names}, step=step)
    report(counts)
    for n, by in counts.items():
        print(f"{n}: {per_class(by['all'])}")
    for n, t in TIMES.items():
        print(f"{n:30s} CPU p50 {1000 * np.median(t):.0f} ms")


if __name__ == "__main__":
    main()
