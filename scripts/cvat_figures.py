"""IoU vs VOC ground truth and seconds per engine call of the CVAT routes, on the test images.

nice -n 15 .venv/bin/python scripts/cvat_figures.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cvat.engine import Engine
from model import decode_image
from model.segmenter import mask_iou
from tests.backend.conftest import jpeg, voc_boxes
from tests.cvat.conftest import DETECT_STEMS, gt_union


def main() -> None:
    e = Engine()
    for stem, (label, voc) in DETECT_STEMS.items():
        rgb = decode_image(jpeg(stem))
        t0 = time.perf_counter()
        found = e.detect(rgb, {label: voc})
        t1 = time.perf_counter()
        e.set_image(rgb)
        t2 = time.perf_counter()
        (_, box), *_ = voc_boxes(stem)
        m = e.interact([], [], box)
        t3 = time.perf_counter()
        det = f"{mask_iou(found[0].mask, gt_union(stem)):.2f}" if found else "none"
        print(
            f"{stem} {voc:10s} {rgb.shape[1]}x{rgb.shape[0]}  detector IoU {det} ({t1 - t0:.2f} s)  "
            f"interactor first-box IoU {mask_iou(m, gt_union(stem)):.2f} (set_image {t2 - t1:.2f} s, box {t3 - t2:.2f} s)"
        )


if __name__ == "__main__":
    main()
