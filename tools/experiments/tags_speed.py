"""Issue 12 session 10: tag mode's CPU per image and tag mIoU of featcut variants, side by side.

    .venv/bin/python tools/experiments/tags_speed.py [--limit N] [--variant NAME:SPEC ...] [--profile N]

Per image, as bench's tag mode (bench/inproc.py ``_tag``): decode the JPEG, ``set_image``,
``segment_classes`` of every ground-truth class present with ``agreement=True``, the RLE of every
mask; timed in process CPU on one thread (torch, OpenCV and the Segmenter), every variant on
the same image before the next image, so drifts of the machine's load hit them alike.

A variant's SPEC is a comma list of ``field=value``: EngineConfig fields of the featcut preset
(e.g. ``class_grabcut_max_side=160``) and the experiment's own switch ``start``, what the gate
gets as "today's mask" of a tag in place of OpenCV GrabCut's (``grabcut``: served; ``cam``: the
digitized CAM's foreground, the pixels where the tag's CAM is >= t and no rival's is higher, with
no cut; ``share``: every pixel, so the gate keeps where the share passes the keep gate), ``split``
(session 17: > 0, the re-cut per group of the gated mask, groups joined after a dilation by that
share of the image's longer side; ``split_min``, a group's least share of the mask to be re-cut)
and ``recut.FIELD``, a FeatCutParams field of the re-cut's own cutter. The
first variant (``base``: featcut as served) is the reference of the digest check: a variant whose
masks and scores are all equal to it says ``same``.

Prints per variant: class-wise binary tag mIoU (PF PB 0.3, the evaluator's class metric) on all
/ A / B (first / second half of the sorted ids) / E / O (even / odd position), Spearman rho of
the served score with the true IoU per tag (all / E / O, evaluator.ranking's halves), CPU per
image p50 / mean on all images and on the first 30 (the bench's images), the number of empty
answers, and whether the masks equal the first variant's. ``--profile N``: cProfile (CPU clock)
of the first variant's tag mode on the first N images instead, by cumulative time.
"""

from __future__ import annotations

import argparse
import ast
import cProfile
import dataclasses
import hashlib
import io
import json
import os
import pstats
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from backend.model import mask_to_rle
from evaluator.dataset import VocDataset
from evaluator.metrics import BinaryCounts
from model import voc
from model.cnn import CamNet
from model.config import EngineConfig, get_config
from model.cut import CutInputs, Window, windowed_cut
from model.featcut import FeatCutCut
from model.grabcut import foreground, has_both_sides
from model.image import decode_image
from model.results import MaskResult, cam_score, mask_iou
from model.segmenter import Segmenter
from model.techniques import GC_BGD, Technique

SPLITS = ("all", "A", "B", "E", "O")
STARTS = ("grabcut", "cam", "share", "featcut", "gcR")


class VariantSegmenter(Segmenter):
    """The engine's Segmenter with the tag's first mask (before the gate) switchable (``start``)."""

    def __init__(
        self,
        config: EngineConfig,
        net: CamNet,
        start: str = "grabcut",
        recut: dict | None = None,
        cam_t: float | None = None,
        threads: int = 1,
        ahead: bool = True,
        split: float = 0.0,
        split_min: float = 0.05,
    ) -> None:
        super().__init__(config, net=net, threads=threads)
        self.ahead = ahead  # False: the shares are not started ahead of the tags' cuts (before session 10)
        self.cam_t = cam_t  # start "cam": the CAM threshold of its foreground (None: the class technique's t)
        if start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}")
        self.start = start
        self.split = split  # > 0: the re-cut per group of the gated mask (_recut_parts)
        self.split_min = split_min
        # The re-cut's own FeatCutParams changes (e.g. keep_far, click_em_iterations): a second cutter.
        self.recut_cutter = None
        if recut:
            params = dataclasses.replace(self.cutter.core.p, **recut)  # type: ignore[attr-defined]
            self.recut_cutter = FeatCutCut(params)

    def _run_scored(self, jobs, seconds, unscored, ahead=None):  # type: ignore[no-untyped-def]
        return super()._run_scored(jobs, seconds, unscored, ahead if self.ahead else None)

    def _recut_tag(self, voc_class: str, gated: np.ndarray) -> tuple[np.ndarray, float | None]:
        if self.split:
            return self._recut_parts(voc_class, gated)
        return self._recut_one(voc_class, gated)

    def _recut_parts(self, voc_class: str, gated: np.ndarray) -> tuple[np.ndarray, float | None]:
        """``split``: each group of the gated mask (8-connected after a dilation of ``split`` of the
        image's longer side) re-cut on its own bounding box, the answers joined; groups under
        ``split_min`` of the mask keep their gated pixels."""
        h, w = gated.shape
        r = max(1, int(round(self.split * max(h, w))))
        grown = cv2.dilate(gated.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
        n, comp = cv2.connectedComponents(grown, connectivity=8)
        if n <= 2:
            return self._recut_one(voc_class, gated)
        out = np.zeros_like(gated)
        total = int(gated.sum())
        confs = []
        for k in range(1, n):
            part = gated & (comp == k)
            if part.sum() < self.split_min * total:
                out |= part
                continue
            m, c = self._recut_one(voc_class, part)
            out |= m
            if c is not None:
                confs.append(c)
        return out, (float(np.mean(confs)) if confs else None)

    def _recut_one(self, voc_class: str, gated: np.ndarray) -> tuple[np.ndarray, float | None]:
        if self.recut_cutter is None:
            return super()._recut_tag(voc_class, gated)
        served, self.cutter = self.cutter, self.recut_cutter  # one thread: swapped for the call
        try:
            return super()._recut_tag(voc_class, gated)
        finally:
            self.cutter = served

    def _segment_class_cam(
        self, voc_class: str, technique: Technique | None, score: bool = False, rivals: tuple[str, ...] | list[str] = ()
    ) -> MaskResult:
        if self.start == "gcR":
            return self._gc_in_reach(voc_class, technique, score, tuple(rivals))
        if self.start in ("grabcut", "featcut"):
            if self.start == "featcut":  # the featcut core (colour GMMs + Potts, one round) in GrabCut's place
                grabcut, self._cut = self._cut, self._core_cut  # type: ignore[method-assign]
                try:
                    return super()._segment_class_cam(voc_class, technique, score, rivals)
                finally:
                    self._cut = grabcut  # type: ignore[method-assign]
            return super()._segment_class_cam(voc_class, technique, score, rivals)
        # Segmenter._segment_class_cam up to the cut, which is left out (its start: Segmenter._tag_init).
        tech = technique or self.config.class_technique
        h, w = self.image.shape[:2]
        start = self._tag_init(voc_class, tech if self.cam_t is None else Technique(tech.variant, self.cam_t), rivals)
        if start is None:
            return MaskResult(np.zeros((h, w), bool), tech, 0.0, "no_cam")
        cam, init = start
        m = foreground(init)
        fallback = None if has_both_sides(init) else "no_background"
        if self.start == "share" and fallback is None:
            m = np.ones((h, w), bool)
        return MaskResult(m, tech, cam_score(m, cam), fallback)

    def _gc_in_reach(self, voc_class: str, technique: Technique | None, score: bool, rivals: tuple[str, ...]) -> MaskResult:
        """GrabCut as served, but only where its answer can reach the served mask: the gate keeps it
        where the tag's share is >= keep (or more), the fallback where the tag has the largest
        share; every other pixel is definite background before the cut (the window, the bounding
        box of the initial foreground grown 25%, shrinks with it)."""
        tech = technique or self.config.class_technique
        h, w = self.image.shape[:2]
        start = self._tag_init(voc_class, tech, rivals)
        if start is None:
            return MaskResult(np.zeros((h, w), bool), tech, 0.0, "no_cam")
        cam, init = start
        assert self._tagprop is not None
        key, share = self._tagprop.shares(self, (voc_class, *rivals))
        k = key.index(voc_class) + 1
        reach = (share[k] >= self._tagprop.params.keep) | (share.argmax(0) == k)
        init[~reach] = GC_BGD
        return self._cut_tag(cam, init, tech, score)

    def _core_cut(
        self, init: np.ndarray, window: Window | None, max_side: int | None, extras: CutInputs | None = None
    ) -> tuple[np.ndarray, str | None]:
        # features given (never read by colour GMMs): FeatCutCut then runs its core, not GrabCut
        return windowed_cut(self.cutter, self.image, init, window, max_side, CutInputs(features=self._features))


def parse_variant(text: str) -> tuple[str, dict[str, object]]:
    name, _, spec = text.partition(":")
    out: dict[str, object] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        k, _, v = item.partition("=")
        try:
            out[k.strip()] = ast.literal_eval(v.strip())
        except (ValueError, SyntaxError):
            out[k.strip()] = v.strip()
    return name, out


def make(spec: dict[str, object], net: CamNet, threads: int = 1) -> VariantSegmenter:
    fields = dict(spec)
    ahead = bool(fields.pop("ahead", True))
    start = str(fields.pop("start", "grabcut"))
    recut = {k[6:]: fields.pop(k) for k in list(fields) if k.startswith("recut.")}
    cam_t = fields.pop("cam_t", None)
    split = float(fields.pop("split", 0.0))  # type: ignore[arg-type]
    split_min = float(fields.pop("split_min", 0.05))  # type: ignore[arg-type]
    cfg = dataclasses.replace(get_config("featcut"), **fields)  # type: ignore[arg-type]
    cam = None if cam_t is None else float(cam_t)  # type: ignore[arg-type]
    return VariantSegmenter(cfg, net, start, recut, cam, threads, ahead, split, split_min)


def tag_mode(seg: Segmenter, jpeg: bytes, tags: list[str]) -> list[MaskResult]:
    """bench/inproc.py's tag mode: decode + set_image + segment_classes(agreement=True) + RLE."""
    seg.set_image(decode_image(jpeg))
    out = seg.segment_classes([(c, None) for c in tags], agreement=True)
    for r in out:
        assert isinstance(r, MaskResult), r
        mask_to_rle(r.mask)
    return out  # type: ignore[return-value]


def rho(x: list[float], y: list[float]) -> float:
    return float(spearmanr(x, y).statistic) if len(x) > 2 else float("nan")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voc", default=os.environ.get("CAMCUT_VOC", "../shared/voc2012/VOC2012"))
    ap.add_argument("--limit", type=int, default=None, help="first N images of the sorted train split (default: all 205)")
    ap.add_argument("--variant", action="append", default=[], help="NAME:field=value,... (repeatable; 'base:' first)")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch, OpenCV and Segmenter threads; > 1: wall times, as bench (the machine's load counts)",
    )
    ap.add_argument("--dump", default=None, help="write per (variant, image, tag) tp / fp / fn / score to this JSON file")
    ap.add_argument("--profile", type=int, default=0, help="cProfile the first variant on the first N images instead")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    cv2.setNumThreads(a.threads)
    variants = [parse_variant(v) for v in (a.variant or ["base:"])]
    net = CamNet()
    segs = {name: make(spec, net, a.threads) for name, spec in variants}
    ds = VocDataset(a.voc)
    ids = sorted(ds.ids("train"))[: a.limit]
    jpegs = {i: (ds.root / "JPEGImages" / f"{i}.jpg").read_bytes() for i in ids}
    if a.profile:
        name, seg = next(iter(segs.items()))
        work = [(jpegs[i], ds.load(i).classes_present()) for i in ids[: a.profile]]
        for jpeg, tags in work[:2]:
            tag_mode(seg, jpeg, tags)  # warm-up, untimed
        prof = cProfile.Profile(time.process_time)
        c0 = time.process_time()
        prof.enable()
        for jpeg, tags in work:
            tag_mode(seg, jpeg, tags)
        prof.disable()
        cpu = time.process_time() - c0
        print(f"{name}: {len(work)} images, {sum(len(t) for _, t in work)} tags, CPU {1000 * cpu / len(work):.1f} ms an image")
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(45)
        print(s.getvalue())
        return 0

    n = len(ids)
    counts = {v: {s: BinaryCounts.zeros() for s in SPLITS} for v in segs}
    rows: dict[str, list[tuple[int, float, float]]] = {v: [] for v in segs}
    cpu: dict[str, list[float]] = {v: [] for v in segs}
    wall: dict[str, list[float]] = {v: [] for v in segs}
    digest = {v: hashlib.sha256() for v in segs}
    empty = dict.fromkeys(segs, 0)
    dump: list[dict[str, object]] = []
    warm = next(iter(jpegs.values()))
    for seg in segs.values():
        tag_mode(seg, warm, ["person"])  # warm-up, untimed
    for k, iid in enumerate(ids):
        s = ds.load(iid)
        tags = s.classes_present()
        splits = ("all", "A" if k < (n + 1) // 2 else "B", "E" if k % 2 == 0 else "O")
        for name, seg in segs.items():
            c0, t0 = time.process_time(), time.perf_counter()
            res = tag_mode(seg, jpegs[iid], tags)
            cpu[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - t0)
            for c, r in zip(tags, res, strict=True):
                t = voc.voc_index(c)
                truth = s.class_mask == t
                for sp in splits:
                    counts[name][sp].add(t - 1, r.mask, truth, s.valid)
                rows[name].append((k, mask_iou(r.mask & s.valid, truth & s.valid), float(r.score)))
                if a.dump:
                    m, tr = r.mask & s.valid, truth & s.valid
                    tp, fp, fn = int((m & tr).sum()), int((m & ~tr).sum()), int((~m & tr).sum())
                    dump.append(
                        {"variant": name, "k": k, "image": iid, "tag": c, "tp": tp, "fp": fp, "fn": fn, "score": float(r.score)}
                    )
                digest[name].update(np.packbits(r.mask).tobytes() + repr(float(r.score)).encode())
                empty[name] += not r.mask.any()
        if k % 20 == 0:
            print(f"{k} {iid}", flush=True)

    if a.dump:
        Path(a.dump).write_text(json.dumps(dump))
    ref = next(iter(segs))
    print(f"{n} images, {len(rows[ref])} tags, {a.threads} thread(s); load average {os.getloadavg()[0]:.1f}")
    head = " ".join(f"{sp:>5s}" for sp in SPLITS)
    print(f"{'variant':10s} mIoU {head} | rho  all     E     O | CPU p50 / mean ms (all; first 30) | empty | same")
    for name in segs:
        by = counts[name]
        m = " ".join(f"{100 * float(np.nanmean(by[sp].iou()[by[sp].seen])):5.2f}" for sp in SPLITS)
        r = rows[name]
        cells = [
            rho([x[2] for x in r if sel(x[0])], [x[1] for x in r if sel(x[0])])
            for sel in (lambda k: True, lambda k: k % 2 == 0, lambda k: k % 2 == 1)
        ]
        c = np.array(cpu[name]) * 1000
        same = "same" if digest[name].digest() == digest[ref].digest() else "differs"
        print(
            f"{name:10s}      {m} | {cells[0]:+.3f} {cells[1]:+.3f} {cells[2]:+.3f} |"
            f" {np.median(c):6.1f} / {c.mean():6.1f}; {np.median(c[:30]):6.1f} / {c[:30].mean():6.1f} | {empty[name]:5d} | {same}"
        )
    for name in segs:
        wl = np.array(wall[name]) * 1000
        sha = digest[name].hexdigest()[:16]
        print(f"{name}: masks and scores sha256 {sha}; wall p50 {np.median(wl):.1f} ms, first 30 {np.median(wl[:30]):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
