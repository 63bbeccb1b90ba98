"""Issue 17: the benchmark's HTTP phase runs on any VOCdevkit folder (a split of its own) and an
empty tag mask is a recorded answer, not a fatal error. Real gunicorn server, real VOC images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.common import load_images
from bench.httpbench import StaticImages, run_http
from evaluator.dataset import DatasetError
from model import VOC_CLASSES

VOC = Path(__file__).resolve().parents[2] / "shared" / "voc2012" / "VOC2012"
DOG = "2007_000063"  # dog + chair; the served engine finds no "sheep" pixels in it (an empty mask)


def devkit(tmp_path: Path) -> Path:
    """A VOC folder of one real image whose class mask calls every object "sheep" (a tag the
    image does not show, as the issue's 'train' on 2007_000123), with a split list of its own."""
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for sub, ext in (("JPEGImages", "jpg"), ("Annotations", "xml"), ("SegmentationObject", "png")):
        (root / sub).mkdir(parents=True)
        shutil.copy(VOC / sub / f"{DOG}.{ext}", root / sub)
    with Image.open(VOC / "SegmentationClass" / f"{DOG}.png") as im:
        cls = np.array(im)
        palette = im.getpalette()
    cls[(cls > 0) & (cls < 255)] = VOC_CLASSES.index("sheep") + 1
    out = Image.fromarray(cls, "P")
    out.putpalette(palette or [])
    (root / "SegmentationClass").mkdir()
    out.save(root / "SegmentationClass" / f"{DOG}.png")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "mine.txt").write_text(f"{DOG}\n")
    return root


def test_incomplete_folder_names_what_is_missing(tmp_path: Path) -> None:
    root = devkit(tmp_path)
    with pytest.raises(DatasetError, match=r"no split list .*train\.txt; available: mine"):
        load_images(root, None, "train")
    (root / "SegmentationClass" / f"{DOG}.png").unlink()
    with pytest.raises(DatasetError, match=rf"missing mask .*SegmentationClass/{DOG}\.png"):
        load_images(root, None, "mine")


@pytest.mark.slow
def test_http_phase_records_empty_tag_masks_and_goes_on(tmp_path: Path) -> None:
    images = load_images(devkit(tmp_path).parent, None, "mine")
    assert [im.classes for im in images] == [("sheep",)]
    ls = StaticImages(images)
    try:
        out = run_http("default", images, 1, ls, tmp_path / "gunicorn.log", soak=0, warmup=0, log=lambda _: None)
    finally:
        ls.close()
    assert out["failures"] == [], out["failures"]
    assert [(e["image"], e["voc_class"]) for e in out["empty_masks"]] == [(DOG, "sheep")]
    assert out["http_tag"]["p50"] > 0 and out["http_box"]["p50"] > 0
