"""What OpenCV GrabCut costs per pixel, and how much a mostly-certain mask saves.

    .venv/bin/python tools/experiments/grabcut_cost.py [--sides 100,128,160,200,300] [--runs 10]

One VOC image (the 4th JPEG by name), downscaled so its longer side is N px. "mostly
uncertain": 3/4 of the image probable foreground around a definite core. "band": definite
foreground inside an ellipse, definite background outside, only a 9 px band uncertain. One
iteration, GC_INIT_WITH_MASK, median of 10 runs, single thread.
"""

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--sides", default="100,128,160,200,300", help="longer sides in px, comma-separated")
ap.add_argument("--runs", type=int, default=10, help="runs per measurement (the median is printed)")
ap.add_argument("--voc", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "voc2012" / "VOC2012")
args = ap.parse_args()
cv2.setNumThreads(1)
d = args.voc / "JPEGImages"
img = cv2.imread(str(d / sorted(os.listdir(d))[3]))


def cost(im: np.ndarray, m0: np.ndarray) -> float:
    tt = []
    for _ in range(args.runs):
        m = m0.copy()
        t = time.perf_counter()
        cv2.grabCut(im, m, None, np.zeros((1, 65)), np.zeros((1, 65)), 1, cv2.GC_INIT_WITH_MASK)
        tt.append(time.perf_counter() - t)
    return float(np.median(tt)) * 1e3


for side in (int(x) for x in args.sides.split(",")):
    s = side / max(img.shape[:2])
    im = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    h, w = im.shape[:2]
    wide = np.full((h, w), cv2.GC_BGD, np.uint8)
    wide[h // 8:-h // 8, w // 8:-w // 8] = cv2.GC_PR_FGD
    wide[h // 3:-h // 3, w // 3:-w // 3] = cv2.GC_FGD
    inner = np.zeros((h, w), np.uint8)
    cv2.ellipse(inner, (w // 2, h // 2), (w // 3, h // 3), 0, 0, 360, 1, -1)
    k = np.ones((9, 9), np.uint8)
    band_px = cv2.dilate(inner, k) - cv2.erode(inner, k)
    band = np.where(inner > 0, cv2.GC_FGD, cv2.GC_BGD).astype(np.uint8)
    band[band_px > 0] = cv2.GC_PR_FGD
    a, b = cost(im, wide), cost(im, band)
    print(f"{side:3d} px ({h * w} px): mostly uncertain {a:6.1f} ms ({1e3 * a / (h * w):.2f} us/px), "
          f"band {b:6.1f} ms ({1e3 * b / (h * w):.2f} us/px)")
