"""The evaluator: metrics (report formulas 4-8), the VOC reader's errors, a real sweep slice, the CLI."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import zlib
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from evaluator.dataset import DatasetError, VocDataset
from evaluator.metrics import BinaryCounts, Confusion
from evaluator.sweep import run_sweep, techniques_for
from model import Box, voc

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VOC_ROOT = SHARED / "voc2012" / "VOC2012"


def b(*v) -> np.ndarray:
    return np.array(v, bool)


# -- metrics -------------------------------------------------------------------------------------
@pytest.fixture
def hand_counts() -> BinaryCounts:
    """Four binary predictions, hand-counted (see the comments)."""
    c = BinaryCounts.zeros()
    # class 0 (aeroplane): pixel 4 is void (pred 1, gt 1 there must be ignored)
    # valid pixels: pred 1 1 0 0 . 0 / gt 1 0 1 0 . 0 -> TP 1, FP 1, FN 1, TN 2
    c.add(0, b(1, 1, 0, 0, 1, 0), b(1, 0, 1, 0, 1, 0), b(1, 1, 1, 1, 0, 1))
    # class 2 (bird): pred 1 1 1 0 0 / gt 1 1 0 1 1 -> TP 2, FP 1, FN 2, TN 0
    c.add(2, b(1, 1, 1, 0, 0), b(1, 1, 0, 1, 1), b(1, 1, 1, 1, 1))
    # class 5 (bus): pred 0 0 0 0 / gt 0 0 1 1 -> TP 0, FP 0, FN 2, TN 2
    c.add(5, b(0, 0, 0, 0), b(0, 0, 1, 1), b(1, 1, 1, 1))
    # class 7 (cat): predicted but never in the ground truth -> TP 0, FP 1, FN 0, TN 3 (unseen)
    c.add(7, b(1, 0, 0, 0), b(0, 0, 0, 0), b(1, 1, 1, 1))
    return c


def test_binary_counts_by_hand(hand_counts):
    c = hand_counts
    assert (c.tp[[0, 2, 5, 7]].tolist(), c.fp[[0, 2, 5, 7]].tolist()) == ([1, 2, 0, 0], [1, 1, 0, 1])
    assert (c.fn[[0, 2, 5, 7]].tolist(), c.tn[[0, 2, 5, 7]].tolist()) == ([1, 2, 2, 0], [2, 0, 2, 3])
    others = [i for i in range(20) if i not in (0, 2, 5, 7)]
    assert not (c.tp[others].any() or c.fp[others].any() or c.fn[others].any() or c.tn[others].any())
    assert c.seen.tolist() == [i in (0, 2, 5) for i in range(20)]


def test_iou_and_acc_formulas_4_5(hand_counts):
    iou, acc = hand_counts.iou(), hand_counts.acc()
    assert iou[0] == pytest.approx(1 / 3) and iou[2] == pytest.approx(2 / 5) and iou[5] == 0.0
    assert acc[0] == pytest.approx(3 / 5) and acc[2] == pytest.approx(2 / 5) and acc[5] == pytest.approx(2 / 4)
    assert np.isnan(iou[7]) and np.isnan(acc[7])  # never in the ground truth: no IoU
    assert np.isnan(iou[1])


def test_summary_formulas_6_7_8(hand_counts):
    s = hand_counts.summary()
    miou = (Fraction(1, 3) + Fraction(2, 5) + 0) / 3  # 11/45
    # t_i = TP_i + FN_i = 2, 4, 2
    fwiou = (2 * Fraction(1, 3) + 4 * Fraction(2, 5) + 2 * 0) / (2 + 4 + 2)  # 17/60
    macc = (Fraction(3, 5) + Fraction(2, 5) + Fraction(1, 2)) / 3  # 1/2
    assert s["mIoU"] == pytest.approx(float(miou), abs=1e-12)
    assert s["fwIoU"] == pytest.approx(float(fwiou), abs=1e-12)
    assert s["mAcc"] == pytest.approx(float(macc), abs=1e-12)
    assert (float(miou), float(fwiou), float(macc)) == pytest.approx((11 / 45, 17 / 60, 0.5))


def test_counts_sum_over_the_dataset(hand_counts):
    """TP/FP/FN/TN are summed over images before dividing (not a mean of per-image IoUs)."""
    a = BinaryCounts.zeros()
    a.add(3, b(1, 1, 1, 1), b(1, 0, 0, 0), b(1, 1, 1, 1))  # IoU 1/4 alone
    other = BinaryCounts.zeros()
    other.add(3, b(1, 1), b(1, 1), b(1, 1))  # IoU 1 alone
    a += other
    assert a.iou()[3] == pytest.approx(3 / 6)  # (1 + 2) / (1 + 3 + 0 + 2), not (1/4 + 1)/2
    assert a.tn[3] == 0 and a.fp[3] == 3


def test_void_only_image_adds_nothing():
    c = BinaryCounts.zeros()
    c.add(4, b(1, 1, 0), b(1, 0, 1), b(0, 0, 0))
    assert c.tp.sum() == c.fp.sum() == c.fn.sum() == c.tn.sum() == 0
    s = c.summary()
    assert np.isnan(s["mIoU"]) and np.isnan(s["fwIoU"]) and np.isnan(s["mAcc"])


def test_confusion_21_class_by_hand():
    gt = np.array([[0, 0, 1], [1, 2, 255]], np.uint8)
    pred = np.array([[0, 1, 1], [1, 0, 3]], np.uint8)  # the void pixel's prediction (3) is ignored
    c = Confusion.zeros()
    c.add(pred, gt, gt != 255)
    assert c.m.shape == (21, 21) and c.m.sum() == 5
    assert (c.m[0, 0], c.m[0, 1], c.m[1, 1], c.m[2, 0]) == (1, 1, 2, 1)
    iou = c.iou()
    # label 0: TP 1, predicted 0 twice, true 0 twice -> 1/3; label 1: 2/(3+2-2); label 2: 0/(0+1-0)
    assert iou[0] == pytest.approx(1 / 3) and iou[1] == pytest.approx(2 / 3) and iou[2] == 0.0
    assert np.isnan(iou[3])  # only predicted on a void pixel: not present
    assert c.miou() == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    c2 = Confusion.zeros()
    c2.add(pred, gt, gt != 255)
    c += c2
    assert c.miou() == pytest.approx(1 / 3) and c.m.sum() == 10


# -- dataset -------------------------------------------------------------------------------------
IDS = ("2007_000039", "2007_000063")


@pytest.fixture
def fake_voc(tmp_path) -> Path:
    root = tmp_path / "VOCdevkit" / "VOC2012"
    for sub, ext in (("JPEGImages", "jpg"), ("SegmentationClass", "png"), ("SegmentationObject", "png"), ("Annotations", "xml")):
        (root / sub).mkdir(parents=True)
        for i in IDS:
            shutil.copy(VOC_ROOT / sub / f"{i}.{ext}", root / sub / f"{i}.{ext}")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(IDS) + "\n\n")
    return root


def test_fake_voc_loads(fake_voc):
    ds = VocDataset(fake_voc)
    assert ds.ids() == list(IDS)
    s = ds.load("2007_000063")
    assert s.image.shape == (375, 500, 3) and s.class_mask.shape == (375, 500)
    assert [o.name for o in s.objects] == ["dog", "chair"]
    assert s.objects[0].box == Box(122.0, 114.0, 379.0, 275.0)  # XML 123 115 379 275, 1-based inclusive
    assert s.classes_present() == ["chair", "dog"]
    assert {1, 2} <= set(np.unique(s.object_mask).tolist())
    # the VOCdevkit parent folder is accepted too
    assert VocDataset(fake_voc.parent).root == fake_voc


def test_wrong_folder(tmp_path):
    with pytest.raises(DatasetError, match="not a VOC2012-style folder: missing JPEGImages"):
        VocDataset(tmp_path)
    with pytest.raises(DatasetError, match="missing"):
        VocDataset(tmp_path / "does-not-exist")


def test_missing_split(fake_voc):
    with pytest.raises(DatasetError, match=r"no split list .*val\.txt; available: train"):
        VocDataset(fake_voc).ids("val")


@pytest.mark.parametrize("sub", ["SegmentationObject", "SegmentationClass"])
def test_missing_mask(fake_voc, sub):
    (fake_voc / sub / "2007_000039.png").unlink()
    ds = VocDataset(fake_voc)
    with pytest.raises(DatasetError, match=f"missing mask .*{sub}.*2007_000039.png"):
        ds.load("2007_000039")
    assert ds.load("2007_000063").objects  # the other image is unaffected


def test_missing_jpeg(fake_voc):
    (fake_voc / "JPEGImages" / "2007_000039.jpg").unlink()
    with pytest.raises(DatasetError, match="not found"):
        VocDataset(fake_voc).load("2007_000039")


def test_truncated_jpeg(fake_voc):
    p = fake_voc / "JPEGImages" / "2007_000039.jpg"
    p.write_bytes(p.read_bytes()[:3000])
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        VocDataset(fake_voc).load("2007_000039")


def test_malformed_xml(fake_voc):
    p = fake_voc / "Annotations" / "2007_000039.xml"
    p.write_text(p.read_text()[:-40])
    with pytest.raises(DatasetError, match=r"malformed XML .*2007_000039\.xml"):
        VocDataset(fake_voc).load("2007_000039")


def test_unknown_class_name_in_xml(fake_voc):
    p = fake_voc / "Annotations" / "2007_000039.xml"
    text = p.read_text()
    assert "<name>tvmonitor</name>" in text
    p.write_text(text.replace("<name>tvmonitor</name>", "<name>television</name>"))
    with pytest.raises(DatasetError, match="object 1: unknown VOC class 'television'"):
        VocDataset(fake_voc).objects("2007_000039")


def test_missing_bndbox_coordinate(fake_voc):
    p = fake_voc / "Annotations" / "2007_000063.xml"
    text = p.read_text()
    start = text.index("<xmax>")
    p.write_text(text[:start] + text[text.index("</xmax>") + len("</xmax>"):])
    with pytest.raises(DatasetError, match=r"object 1 \(dog\) has no valid <bndbox>"):
        VocDataset(fake_voc).objects("2007_000063")


def test_missing_annotation(fake_voc):
    (fake_voc / "Annotations" / "2007_000063.xml").unlink()
    with pytest.raises(DatasetError, match="missing annotation"):
        VocDataset(fake_voc).load("2007_000063")


def test_mask_wrong_mode_size_and_labels(fake_voc):
    p = fake_voc / "SegmentationClass" / "2007_000039.png"
    with Image.open(p) as im:
        arr = np.asarray(im).copy()
    Image.fromarray(np.dstack([arr] * 3)).save(p)  # RGB
    ds = VocDataset(fake_voc)
    with pytest.raises(DatasetError, match="expected a palettised"):
        ds.load("2007_000039")
    Image.fromarray(arr[:-1]).save(p)  # L, one row short
    with pytest.raises(DatasetError, match="differs from image"):
        ds.load("2007_000039")
    bad = arr.copy()
    bad[0, 0] = 50
    Image.fromarray(bad).save(p)
    with pytest.raises(DatasetError, match=r"unknown labels \[50\]"):
        ds.load("2007_000039")
    p.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DatasetError, match="unreadable mask"):
        ds.load("2007_000039")


# -- a real slice of the sweep ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def restore_threads():
    """run_sweep(workers=1) sets torch / OpenCV to one thread in this process; undo it after."""
    t, c = torch.get_num_threads(), cv2.getNumThreads()
    yield
    torch.set_num_threads(t)
    cv2.setNumThreads(c)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, restore_threads):
    cache = tmp_path_factory.mktemp("cnn-cache")
    res = run_sweep(VOC_ROOT, limit=3, thresholds=(0.3, 0.6), workers=1, cache_dir=cache, progress=False)
    return res, cache


@pytest.mark.slow  # the sweep fixture on 3 VOC images: 80 s
def test_sweep_numbers_are_sane(sweep):
    res, cache = sweep
    assert set(res) == {"object", "class"}
    obj, cls = res["object"], res["class"]
    assert set(obj.binary) == {t.label for t in techniques_for("object", (0.3, 0.6))}
    assert len(obj.binary) == 9 and len(cls.binary) == 8 and "grabcut" not in cls.binary
    g = obj.binary["grabcut"].summary()
    assert 0 < g["mIoU"] < 1 and 0 < g["fwIoU"] < 1 and 0 < g["mAcc"] < 1
    assert g["mIoU"] > 0.5  # measured 0.68 on the first three train images
    assert 0 < obj.confusion["grabcut"].miou() < 1
    # first three train images: aeroplane x2 + person x2, tvmonitor, dog + chair
    seen = obj.binary["grabcut"].seen
    assert [voc.VOC_CLASSES[i] for i in np.flatnonzero(seen)] == ["aeroplane", "chair", "dog", "person", "tvmonitor"]
    # every object technique counts the same valid pixels per class
    totals = {k: (c.tp + c.fp + c.fn + c.tn).tolist() for k, c in obj.binary.items()}
    assert len({tuple(v) for v in totals.values()}) == 1
    for label, counts in cls.binary.items():  # measured mIoU 0.13 (cam 0.6) to 0.46 (PF PB 0.3)
        s = counts.summary()
        assert 0.05 < s["mIoU"] < 0.8 and 0.1 < s["mAcc"] < 0.95, (label, s)
    assert cls.binary["PF PB 0.3"].summary()["mIoU"] > 0.35  # the served tag technique; measured 0.46
    assert len(list(Path(cache).glob("*.npz"))) == 3


@pytest.mark.slow  # uses the sweep fixture (80 s)
def test_sweep_rerun_from_cache_gives_identical_counts(sweep, monkeypatch):
    res, cache = sweep
    from model.cnn import CamNet

    def no_cnn(*a, **k):
        raise AssertionError("the CNN ran although its output is cached")

    monkeypatch.setattr(CamNet, "run", no_cnn)
    again = run_sweep(VOC_ROOT, limit=3, thresholds=(0.6,), variants=("grabcut", "fpf"), workers=1, cache_dir=cache, progress=False)
    assert set(again["object"].binary) == {"grabcut", "F PF 0.6"}
    for task in ("object", "class"):
        for label, counts in again[task].binary.items():
            ref = res[task].binary[label]
            for f in ("tp", "fp", "fn", "tn"):
                assert np.array_equal(getattr(counts, f), getattr(ref, f)), (task, label, f)
            assert np.array_equal(again[task].confusion[label].m, res[task].confusion[label].m)


def test_sweep_rejects_unknown_task(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        run_sweep(VOC_ROOT, tasks=("segment",), limit=1, progress=False)


def test_sweep_limit_is_honoured_including_zero(monkeypatch):
    """limit=N runs exactly the first N images; limit=0 must not silently mean "all 205"."""
    import evaluator.sweep as sw

    seen: list[str] = []
    monkeypatch.setattr(sw, "_init_worker", lambda *a, **k: None)
    monkeypatch.setattr(sw, "_work", lambda i: (seen.append(i), (i, {"object": sw.Scores()}))[1])
    ids = VocDataset(VOC_ROOT).ids("train")
    run_sweep(VOC_ROOT, tasks=("object",), limit=2, workers=1, progress=False)
    assert seen == ids[:2]
    seen.clear()
    try:
        run_sweep(VOC_ROOT, tasks=("object",), limit=0, workers=1, progress=False)
    except ValueError:
        return  # refusing limit=0 is fine too
    assert len(seen) == 0, f"limit=0 ran {len(seen)} images"


# -- the command line -----------------------------------------------------------------------------
def _is_png(p: Path) -> bool:
    data = p.read_bytes()
    if len(data) < 33 or data[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    length, kind = struct.unpack(">I4s", data[8:16])
    return kind == b"IHDR" and zlib.crc32(data[12:16 + length]) & 0xFFFFFFFF == struct.unpack(">I", data[16 + length:20 + length])[0]


@pytest.mark.parametrize(
    "thresholds",
    [
        "0.5",  # the documented smoke run; no threshold equals the figures' chosen t (0.6 / 0.3)
        "0.3,0.6",  # includes the chosen t of both tasks
    ],
)
@pytest.mark.slow  # 54 s and 18 s, and the sweep fixture
def test_cli_writes_tables_csvs_and_figures(tmp_path, sweep, thresholds):
    _, cache = sweep
    out = tmp_path / "run"
    r = subprocess.run(
        [sys.executable, "-m", "evaluator", "--voc", str(VOC_ROOT), "--limit", "2", "--thresholds", thresholds, "--workers", "1",
         "--cache", str(cache), "--no-progress", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("tables.md", "table_object.csv", "table_class.csv", "sweep_object.csv", "sweep_class.csv", "run.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    pngs = ["object_miou.png", "object_macc.png", "object_class_iou.png", "class_miou.png", "class_macc.png", "class_class_iou.png"]
    for name in pngs:
        p = out / name
        assert p.is_file() and p.stat().st_size > 1000 and _is_png(p), name
        with Image.open(p) as im:
            im.verify()
    md = (out / "tables.md").read_text()
    assert "Object segmentation" in md and "Class segmentation" in md and "| grabcut |" in md
    import csv

    rows = list(csv.DictReader((out / "sweep_object.csv").read_text().splitlines()))
    assert {r["technique"] for r in rows} == {"grabcut", "cam", "PF PB", "F PF", "F PB"}
    g = next(r for r in rows if r["technique"] == "grabcut")
    assert 0 < float(g["mIoU"]) < 100
    table = list(csv.DictReader((out / "table_class.csv").read_text().splitlines()))
    assert {r["technique"] for r in table} == {"cam", "PF PB", "F PF", "F PB"} and all(r["t"] in thresholds.split(",") for r in table)


def test_cli_wrong_voc_folder_exits_2(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "evaluator", "--voc", str(tmp_path / "nowhere"), "--limit", "1", "--workers", "1",
         "--cache", "", "--out", str(tmp_path / "o")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 2
    assert "error:" in r.stderr and "not a VOC2012-style folder" in r.stderr and "nowhere" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()
