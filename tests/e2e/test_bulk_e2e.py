"""End to end: ``python -m backend.bulk`` pre-annotates a real Label Studio 1.23.2 project.

Project with RectangleLabels + BrushLabels, 3 real VOC JPEGs uploaded, their VOC boxes imported
as predictions ("voc-boxes"); the bulk command runs with 2 worker processes, then every task must
have one camcut brushlabels prediction whose RLE decodes to the image size. Running it again (with
the same state file, then with a fresh one, which leaves only LS's own predictions to go by) must
not predict anything again.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from label_studio_sdk.converter.brush import decode_rle
from PIL import Image

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from tests.e2e.label_studio import DEMO_LABELS, VOC_ROOT, create_voc_project, voc_rectangles  # noqa: E402

pytestmark = pytest.mark.e2e

VOC, LABELS = VOC_ROOT, DEMO_LABELS
STEMS = ("2007_000063", "2007_000528", "2007_000170")  # dog, cat, two persons


def bulk(label_studio: Any, project: int, model_dir: Path, *extra: str) -> tuple[int, str, str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CAMCUT_", "LABEL_STUDIO_", "BASIC_AUTH_"))},
        "LABEL_STUDIO_URL": label_studio.url, "LABEL_STUDIO_API_KEY": label_studio.token, "MODEL_DIR": str(model_dir),
    }
    proc = subprocess.run([sys.executable, "-m", "backend.bulk", "--project", str(project), "--workers", "2", *extra],
                          cwd=_REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert label_studio.token not in proc.stdout + proc.stderr, "the API key leaked into the output"
    return proc.returncode, proc.stdout, proc.stderr


def camcut_predictions(label_studio: Any, tid: int) -> list[dict[str, Any]]:
    return [p for p in label_studio.list_predictions(tid) if str(p.get("model_version", "")).startswith("camcut-")]


def test_bulk_predicts_every_task_once(label_studio: Any, tmp_path: Path) -> None:
    proj, by_stem = create_voc_project(label_studio, "camcut bulk e2e", STEMS)
    model_dir = tmp_path / "model_dir"

    code, out, err = bulk(label_studio, proj["id"], model_dir)
    print(out)
    assert code == 0, out + err[-3000:]
    assert "predicted       3" in out and "failed          0" in out
    rate = float(re.search(r"rate\s+([\d.]+) tasks/s", out).group(1))
    print(f"e2e bulk: {rate:.2f} tasks/s with 2 workers")
    assert (model_dir / f"bulk-{proj['id']}.jsonl").is_file()

    counts = {}
    for stem, tid in by_stem.items():
        [pred] = camcut_predictions(label_studio, tid)
        boxes = voc_rectangles(VOC / "Annotations" / f"{stem}.xml", labels=LABELS)
        assert len(pred["result"]) == len(boxes)
        with Image.open(VOC / "JPEGImages" / f"{stem}.jpg") as im:
            w, h = im.size
        for res, box in zip(pred["result"], boxes, strict=False):
            assert (res["type"], res["from_name"], res["to_name"]) == ("brushlabels", "mask", "image")
            assert res["value"]["brushlabels"] == box["value"]["rectanglelabels"]
            assert (res["original_width"], res["original_height"]) == (w, h)
            flat = np.asarray(decode_rle(res["value"]["rle"]))
            assert flat.size == w * h * 4, f"task {tid}: RLE does not decode to {w}x{h}"
            assert (flat.reshape(h, w, 4)[:, :, 3] > 0).any()
        counts[tid] = len(label_studio.list_predictions(tid))
    assert set(counts.values()) == {2}  # voc-boxes + camcut

    # again, same state file: everything skipped from the state file
    code, out, err = bulk(label_studio, proj["id"], model_dir)
    assert code == 0, out + err[-3000:]
    assert "predicted       0" in out and "already done: 3 in the state file" in out
    assert {tid: len(label_studio.list_predictions(tid)) for tid in counts} == counts

    # again with a fresh state file: LS's own camcut predictions are enough to skip
    code, out, err = bulk(label_studio, proj["id"], model_dir, "--state", str(tmp_path / "fresh.jsonl"))
    assert code == 0, out + err[-3000:]
    assert "predicted       0" in out and "3 with a camcut-" in out
    assert {tid: len(label_studio.list_predictions(tid)) for tid in counts} == counts
