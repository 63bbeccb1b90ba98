"""The ``camcut`` command line (model/cli.py) on a real VOC image."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VOC = SHARED / "voc2012" / "VOC2012"
IMAGE_ID = "2007_000063"  # 500 x 375: a dog (object 1, box 123 115 379 275 in the XML) and a chair
IMAGE = VOC / "JPEGImages" / f"{IMAGE_ID}.jpg"
DOG_BOX = ("122", "114", "379", "275")  # pixel box, x1/y1 exclusive


@pytest.fixture(scope="module")
def truth():
    with Image.open(VOC / "SegmentationObject" / f"{IMAGE_ID}.png") as im:
        obj = np.asarray(im)
    with Image.open(VOC / "SegmentationClass" / f"{IMAGE_ID}.png") as im:
        cls = np.asarray(im)
    with Image.open(IMAGE) as im:
        rgb = np.asarray(im.convert("RGB"))
    return rgb, obj, cls


def _iou(a, b, valid):
    a, b = a & valid, b & valid
    return np.count_nonzero(a & b) / max(1, np.count_nonzero(a | b))


def _read_mask(p: Path) -> np.ndarray:
    with Image.open(p) as im:
        assert im.mode == "L"
        m = np.asarray(im)
    assert set(np.unique(m).tolist()) <= {0, 255}
    return m == 255


def test_box_writes_mask_and_overlay(tmp_path, truth):
    rgb, obj, _ = truth
    prefix = tmp_path / "sub" / "x"
    r = subprocess.run(
        [sys.executable, "-m", "model.cli", str(IMAGE), "--box", *DOG_BOX, "--class", "dog", "--out", str(prefix)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, r.stderr
    mask_png, overlay_png = tmp_path / "sub" / "x.dog.mask.png", tmp_path / "sub" / "x.dog.overlay.png"
    assert str(mask_png) in r.stdout and "F PF 0.7" in r.stdout  # the default config's box technique (issue 13 item 7)
    with Image.open(mask_png) as im:
        assert im.size == (500, 375)
    mask = _read_mask(mask_png)
    assert _iou(mask, obj == 1, obj != 255) > 0.85  # measured 0.965
    assert not mask[:, :122].any() and not mask[275:].any()  # nothing outside the box
    with Image.open(overlay_png) as im:
        assert im.size == (500, 375) and im.mode == "RGB"
        ov = np.asarray(im)
    assert np.array_equal(ov[~mask], rgb[~mask])  # untouched outside the mask
    interior = mask & np.roll(mask, 1, 0) & np.roll(mask, 1, 1) & np.roll(mask, -1, 0) & np.roll(mask, -1, 1)
    assert interior.sum() > 0.8 * mask.sum()
    # interior pixels are blended half-and-half with red (255, 40, 40)
    tinted = 0.5 * rgb[interior].astype(np.float32) + 0.5 * np.array([255, 40, 40], np.float32)
    assert np.abs(ov[interior].astype(np.float32) - tinted).max() <= 1.0
    assert ov[interior][:, 0].mean() > rgb[interior][:, 0].mean() + 20


def test_tag_runs_the_class_task(tmp_path, truth, capsys):
    _, _, cls = truth
    prefix = tmp_path / "t"
    assert main([str(IMAGE), "--tag", "dog", "--technique", "pfpb 0.3", "--out", str(prefix)]) == 0
    out = capsys.readouterr().out
    assert "dog: PF PB 0.3" in out
    mask = _read_mask(tmp_path / "t.dog.mask.png")
    assert mask.shape == (375, 500)
    assert (tmp_path / "t.dog.overlay.png").is_file()
    assert _iou(mask, cls == 12, cls != 255) > 0.3  # the dog, roughly, from the CAM alone
    assert not (tmp_path / "t.chair.mask.png").exists()


def test_grabcut_box_without_class(tmp_path, capsys):
    assert main([str(IMAGE), "--box", *DOG_BOX, "--out", str(tmp_path / "g")]) == 0
    assert "box: grabcut" in capsys.readouterr().out
    assert _read_mask(tmp_path / "g.box.mask.png").any()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--box", *DOG_BOX, "--class", "doggo"], "unknown VOC class 'doggo'"),
        (["--tag", "unicorn"], "unknown VOC class 'unicorn'"),
        (["--box", "600", "400", "700", "500", "--class", "dog"], "no area inside the 500x375 image"),
        (["--box", *DOG_BOX, "--class", "dog", "--technique", "sam 0.5"], "unknown technique"),
    ],
    ids=["bad-class", "bad-tag", "box-outside", "bad-technique"],
)
def test_errors_exit_2_with_message(tmp_path, capsys, args, message):
    assert main([str(IMAGE), *args, "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not list(tmp_path.glob("e*.png"))


def test_bad_class_exits_2_as_a_process(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "model.cli", str(IMAGE), "--box", *DOG_BOX, "--class", "doggo", "--out", str(tmp_path / "x")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 2
    assert "error: unknown VOC class 'doggo'" in r.stderr and "Traceback" not in r.stderr


def test_unreadable_image_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg at all")
    assert main([str(bad), "--tag", "dog"]) == 2
    assert "not a readable image" in capsys.readouterr().err
