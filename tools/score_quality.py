"""How well the backend's scores rank its masks, and how many no-prompt tasks get a mask.

Runs backend.model.CamCutModel (the code in this checkout) on the shared VOC images with
segmentation ground truth, images read from disk (no Label Studio), and prints:

* boxes: one task per image with its VOC boxes as rectangles; Spearman rho between each mask's
  score and its IoU with the best ground-truth instance of its class;
* tags: one task per image tagged with its VOC classes; rho between score and class IoU;
* nothing: one task per image, no prompt, the project's labels being ``--labels``; the share of
  tasks that get at least one mask and the mean class IoU of those masks (0 for a class absent).

    python tools/score_quality.py --limit 60 [--labels dog,cat,person] [--voc ../shared/voc2012/VOC2012]

Issue 13's "before / after" figures are this script run in a checkout of main and of `ux`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from label_studio_sdk.converter.brush import decode_rle

from backend.config import Settings
from backend.labelstudio import LabelStudioClient
from backend.model import CamCutModel
from model import VOC_CLASSES, CamNet

DEFAULT_VOC = Path(__file__).resolve().parents[2] / "shared" / "voc2012" / "VOC2012"


class DiskFetcher:
    """The ImageFetcher interface over a folder of JPEGs ("<stem>.jpg" as the task's image)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.client = folder, LabelStudioClient("", "")

    def fetch(self, ref: str, task_id: int | None = None) -> Any:
        from backend.fetch import Fetched

        return Fetched((self.folder / Path(ref).name).read_bytes(), ref)


def decode(res: dict[str, Any]) -> np.ndarray:
    w, h = res["original_width"], res["original_height"]
    return np.asarray(decode_rle(res["value"]["rle"])).reshape(h, w, 4)[:, :, 3] > 0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.count_nonzero(a | b)
    return 1.0 if u == 0 else np.count_nonzero(a & b) / u


def config(labels: list[str]) -> str:
    ls = "".join(f'<Label value="{c}"/>' for c in labels)
    return (
        f'<View><Image name="image" value="$image"/><RectangleLabels name="box" toName="image">{ls}</RectangleLabels>'
        f'<BrushLabels name="mask" toName="image">{ls}</BrushLabels></View>'
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--voc", type=Path, default=DEFAULT_VOC)
    ap.add_argument("--limit", type=int, default=60, help="first N images (sorted) with segmentation ground truth")
    ap.add_argument(
        "--labels", default="", help="comma list of project labels for the no-prompt run (default: the 20 VOC classes)"
    )
    args = ap.parse_args(argv)
    stems = sorted(p.stem for p in (args.voc / "SegmentationObject").glob("*.png"))[: args.limit]
    voc_labels = list(VOC_CLASSES)
    guess_labels = [x.strip() for x in args.labels.split(",") if x.strip()] or voc_labels
    with tempfile.TemporaryDirectory() as tmp:
        model = CamCutModel(Settings.from_env({"MODEL_DIR": tmp}), net=CamNet(), fetcher=DiskFetcher(args.voc / "JPEGImages"))  # type: ignore[arg-type]
        rows: dict[str, list[tuple[float, float]]] = {"boxes": [], "tags": []}
        guessed = masked = 0
        guess_ious: list[float] = []
        for k, stem in enumerate(stems):
            obj = np.array(Image.open(args.voc / "SegmentationObject" / f"{stem}.png"))
            cls = np.array(Image.open(args.voc / "SegmentationClass" / f"{stem}.png"))
            h, w = cls.shape
            inst = [(VOC_CLASSES[int(np.bincount(cls[obj == i]).argmax()) - 1], obj == i) for i in np.unique(obj) if 0 < i < 255]
            present = sorted({c for c, _ in inst})
            boxes: list[dict[str, Any]] = []
            for o in ET.parse(args.voc / "Annotations" / f"{stem}.xml").getroot().iter("object"):
                bb = o.find("bndbox")
                x0, y0, x1, y1 = (float(bb.find(t).text) for t in ("xmin", "ymin", "xmax", "ymax"))  # type: ignore[union-attr,arg-type]
                boxes.append(
                    {
                        "id": f"r{len(boxes)}",
                        "type": "rectanglelabels",
                        "from_name": "box",
                        "to_name": "image",
                        "value": {
                            "x": (x0 - 1) * 100 / w,
                            "y": (y0 - 1) * 100 / h,
                            "width": (x1 - x0 + 1) * 100 / w,
                            "height": (y1 - y0 + 1) * 100 / h,
                            "rectanglelabels": [o.findtext("name")],
                        },
                    }
                )
            data = {"image": f"{stem}.jpg"}
            tasks = [
                {"id": 3 * k + 1, "data": data, "predictions": [{"result": boxes}]},
                {"id": 3 * k + 2, "data": {**data, "tags": present}, "predictions": []},
            ]
            for kind, pred in zip(("boxes", "tags"), model.predict(tasks, "1", config(voc_labels), None), strict=True):
                for r in pred.get("result") or []:
                    c, m = r["meta"]["voc_class"], decode(r)
                    truth = (
                        max((iou(m, g) for ci, g in inst if ci == c), default=0.0)
                        if kind == "boxes"
                        else iou(m, cls == VOC_CLASSES.index(c) + 1)
                    )
                    rows[kind].append((r["score"], truth))
            [pred] = model.predict([{"id": 3 * k + 3, "data": data, "predictions": []}], "2", config(guess_labels), None)
            guessed += 1
            res = pred.get("result") or []
            masked += bool(res)
            for r in res:
                c = r["meta"]["voc_class"]
                guess_ious.append(iou(decode(r), cls == VOC_CLASSES.index(c) + 1) if c in present else 0.0)
    out: dict[str, Any] = {"images": len(stems)}
    for kind, pairs in rows.items():
        s, t = np.array(pairs).T
        out[kind] = {
            "masks": len(pairs),
            "spearman_rho": round(float(spearmanr(s, t).statistic), 3),
            "mean_iou": round(float(t.mean()), 3),
        }
    out["nothing"] = {
        "tasks": guessed,
        "with_mask": masked,
        "share": round(masked / max(guessed, 1), 3),
        "mean_iou": round(float(np.mean(guess_ious)), 3) if guess_ious else None,
        "labels": ",".join(guess_labels),
    }
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
