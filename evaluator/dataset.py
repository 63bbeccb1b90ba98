"""Reading a VOCdevkit folder (VOC2012 layout) with clear errors for anything malformed."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from model import voc
from model.image import ImageError, decode_image
from model.prompts import Box

VOID = 255
REQUIRED_DIRS = ("JPEGImages", "SegmentationClass", "SegmentationObject", "Annotations", "ImageSets/Segmentation")


class DatasetError(ValueError):
    """The folder is not a usable VOCdevkit, or one of its files is missing or malformed."""


@dataclass(frozen=True)
class VocObject:
    name: str  # VOC class name
    box: Box  # pixel box (half-open), converted from the XML's 1-based inclusive box
    instance: int  # value of this object in SegmentationObject (k-th <object>, 1-based)
    difficult: bool


@dataclass
class VocSample:
    image_id: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    class_mask: np.ndarray  # (H, W) uint8: 0 background, 1..20 classes, 255 void
    object_mask: np.ndarray  # (H, W) uint8: 0 background, 1..N instances, 255 void
    objects: list[VocObject]

    @property
    def valid(self) -> np.ndarray:
        return self.class_mask != VOID

    def classes_present(self) -> list[str]:
        ids = sorted(set(np.unique(self.class_mask).tolist()) - {0, VOID})
        return [voc.VOC_CLASSES[i - 1] for i in ids]


class VocDataset:
    def __init__(self, root: str | Path) -> None:
        r = Path(root)
        if (r / "VOC2012").is_dir() and not (r / "JPEGImages").is_dir():
            r = r / "VOC2012"  # accept the VOCdevkit folder itself
        missing = [d for d in REQUIRED_DIRS if not (r / d).is_dir()]
        if missing:
            raise DatasetError(f"{root} is not a VOC2012-style folder: missing {', '.join(missing)}")
        self.root = r

    def ids(self, split: str = "train") -> list[str]:
        f = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not f.is_file():
            avail = sorted(p.stem for p in (self.root / "ImageSets" / "Segmentation").glob("*.txt"))
            raise DatasetError(f"no split list {f}; available: {', '.join(avail) or 'none'}")
        return [ln.strip() for ln in f.read_text().splitlines() if ln.strip()]

    def _png(self, sub: str, image_id: str) -> np.ndarray:
        p = self.root / sub / f"{image_id}.png"
        if not p.is_file():
            raise DatasetError(f"missing mask {p}")
        try:
            with Image.open(p) as im:
                if im.mode not in ("P", "L"):
                    raise DatasetError(f"{p}: expected a palettised (P) or L mask, got mode {im.mode}")
                return np.asarray(im, dtype=np.uint8).copy()
        except DatasetError:
            raise
        except Exception as exc:
            raise DatasetError(f"unreadable mask {p}: {exc}") from exc

    def objects(self, image_id: str) -> list[VocObject]:
        p = self.root / "Annotations" / f"{image_id}.xml"
        if not p.is_file():
            raise DatasetError(f"missing annotation {p}")
        try:
            root = ET.parse(p).getroot()
        except ET.ParseError as exc:
            raise DatasetError(f"malformed XML {p}: {exc}") from exc
        out = []
        for k, obj in enumerate(root.findall("object"), start=1):
            name = (obj.findtext("name") or "").strip()
            try:
                voc.voc_index(name)
            except voc.UnknownClassError as exc:
                raise DatasetError(f"{p}: object {k}: {exc}") from exc
            bb = obj.find("bndbox")
            try:
                coords = [float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")]  # type: ignore[union-attr,arg-type]
            except (AttributeError, TypeError, ValueError) as exc:
                raise DatasetError(f"{p}: object {k} ({name}) has no valid <bndbox>") from exc
            out.append(VocObject(name.lower(), Box.from_voc(*coords), k, (obj.findtext("difficult") or "0").strip() == "1"))
        return out

    def load(self, image_id: str) -> VocSample:
        jpg = self.root / "JPEGImages" / f"{image_id}.jpg"
        try:
            image = decode_image(jpg)
        except ImageError as exc:
            raise DatasetError(str(exc)) from exc
        cls = self._png("SegmentationClass", image_id)
        obj = self._png("SegmentationObject", image_id)
        if cls.shape != image.shape[:2] or obj.shape != image.shape[:2]:
            raise DatasetError(f"{image_id}: mask size {cls.shape}/{obj.shape} differs from image {image.shape[:2]}")
        bad = set(np.unique(cls).tolist()) - set(range(len(voc.VOC_CLASSES) + 1)) - {VOID}
        if bad:
            raise DatasetError(f"{image_id}: class mask has unknown labels {sorted(bad)}")
        return VocSample(image_id, image, cls, obj, self.objects(image_id))
