"""Cache what the tag experiments need, once per VOC image, in /tmp/camcut_tags (or $TAGS_CACHE).

Per image: the CNN-input-sized RGB image (the `default` config's 320 px), SqueezeNet's fire3 /
fire5 / fire9 maps and the 20 VOC CAMs from one pass, the full-size class mask, and the masks
today's `default` class task gives for every ground-truth tag (PF PB 0.3, tags competing,
window 25%, 256 px). The method experiments then run without the CNN or GrabCut.

    .venv/bin/python tools/experiments/tags_cache.py          # 205 images, ~2 min on 2 busy cores
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from evaluator.dataset import VocDataset  # noqa: E402
from model import voc  # noqa: E402
from model.engine import Segmenter, get_config  # noqa: E402

VOC_ROOT = Path(os.environ.get("VOC_ROOT", ROOT.parents[1] / "shared" / "voc2012" / "VOC2012"))
if not VOC_ROOT.is_dir():
    VOC_ROOT = Path("/work/shared/voc2012/VOC2012")
CACHE = Path(os.environ.get("TAGS_CACHE", "/tmp/camcut_tags"))


def ids() -> list[str]:
    return sorted(VocDataset(VOC_ROOT).ids("train"))


def cnn_input(seg: Segmenter, rgb: np.ndarray) -> np.ndarray:
    """The image as the CNN sees it (same resize as CamNet.forward)."""
    h, w = rgb.shape[:2]
    side = seg.config.cnn_max_side
    if side is not None and max(h, w) > side:
        s = side / max(h, w)
        return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return rgb


def fire_maps(seg: Segmenter, small: np.ndarray) -> dict[str, np.ndarray]:
    """fire3 (/4), fire5 (/8), fire9 (/16) activations of one pass (features indices 4, 7, 12)."""
    net = seg.net.net
    x = torch.from_numpy(small.copy()).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    x = ((x - seg.net._mean) / seg.net._std).contiguous(memory_format=torch.channels_last)
    out = {}
    with torch.inference_mode():
        for i, layer in enumerate(net.features):
            x = layer(x)
            if i in (4, 7, 12):
                out[{4: "f3", 7: "f5", 12: "f9"}[i]] = x[0].numpy().astype(np.float16)
    return out


def main() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    ds = VocDataset(VOC_ROOT)
    seg = Segmenter(get_config("default"))
    t0 = time.time()
    for n, iid in enumerate(ids()):
        p = CACHE / f"{iid}.npz"
        if p.is_file():
            continue
        s = ds.load(iid)
        seg.set_image(s.image)
        tags = s.classes_present()
        masks = [seg.segment_class(c, others=tags).mask for c in tags]
        base = np.stack(masks) if masks else np.zeros((0,) + s.class_mask.shape, bool)
        small = cnn_input(seg, seg.image)
        np.savez_compressed(
            p,
            small=small,
            gt=s.class_mask,
            voc_cams=seg.cnn.voc_cams,
            logits=seg.cnn.logits,
            tags=np.array([voc.voc_index(c) for c in tags], np.int64),
            base=np.packbits(base, axis=-1),
            **fire_maps(seg, small),
        )  # type: ignore[arg-type]
        if n % 20 == 0:
            print(f"{n} {iid} {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
