"""End to end, the learned head (issue 14) with a real Label Studio 1.23.2 and camcut under gunicorn.

A one-class project, as real projects often are: ``person`` (the rule: the most frequent class
of the shared images, 153 of 579 objects). The teaching and scored images are real VOC train
images chosen by a rule, not by hand: the split's sorted ids are halved as ``evaluator.learn
--halves`` halves them (even / odd positions); every even-half image with a person teaches (40
images, 90 persons) and every odd-half image with a person is scored (42 images, 63 persons);
no image is in both. Only the person boxes are predicted and corrected.

1. camcut's predictions for the scored tasks are retrieved through LS (from their VOC boxes)
   and scored against the VOC instance masks (mean IoU over objects);
2. an annotation is submitted through LS's API for every teaching task: each VOC object's
   rectangle and its instance mask as brush RLE (no camcut prediction exists for these tasks,
   so the correction path takes the annotation's own box of the class, as a user drawing a box
   and painting the object gives it); LS's own webhook tells camcut, which re-reads them;
3. polled with a deadline: every annotation processed and no re-fit due any more (``/metrics``
   ``head``: samples stored, the last fit's sample count, whether it was kept);
4. the model version changes iff the gate kept a head; if kept, LS's project ``model_version``
   follows, and predictions retrieved again through LS (new model version) on the scored tasks
   differ: their masks, or, for a score model kept alone (head version "s..."), only their scores
   (the masks must be the same); mean IoU and the score's Spearman rho before / after are printed,
   not asserted (see the end of the test: the gain is not shown).

The threshold loop never adapts here (``CAMCUT_MIN_CORRECTIONS`` out of reach): only the head
may move the version or the masks.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from label_studio_sdk.converter.brush import decode_rle
from PIL import Image
from scipy.stats import spearmanr

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from backend.learning import REFIT_EVERY  # noqa: E402
from backend.results import mask_to_rle  # noqa: E402
from tests.e2e.label_studio import VOC_ROOT, CamcutBackend, create_voc_project, voc_rectangles  # noqa: E402

pytestmark = pytest.mark.e2e

CLASS = "person"
CLASSES = f'<Label value="{CLASS}"/>'
LABEL_CONFIG = f"""<View>
  <Image name="image" value="$image" zoom="true"/>
  <RectangleLabels name="box" toName="image">{CLASSES}</RectangleLabels>
  <BrushLabels name="mask" toName="image">{CLASSES}</BrushLabels>
</View>"""


def halves() -> tuple[list[str], list[str]]:
    """The even and odd halves' images with a CLASS object."""
    ids = [s.strip() for s in (VOC_ROOT / "ImageSets" / "Segmentation" / "train.txt").read_text().splitlines() if s.strip()]
    return [s for s in ids[0::2] if rects(s)], [s for s in ids[1::2] if rects(s)]


def rects(stem: str) -> list[dict[str, Any]]:
    """The image's CLASS boxes (ids ``voc<i>``: i is the object's XML index)."""
    return voc_rectangles(VOC_ROOT / "Annotations" / f"{stem}.xml", labels=[CLASS])


def instances(stem: str) -> tuple[list[np.ndarray], np.ndarray]:
    """The VOC instance masks in XML object order (SegmentationObject index i+1 = object i) and the
    pixels VOC scores (255: the void border)."""
    obj = np.array(Image.open(VOC_ROOT / "SegmentationObject" / f"{stem}.png"))
    n = len(voc_rectangles(VOC_ROOT / "Annotations" / f"{stem}.xml"))
    return [obj == i + 1 for i in range(n)], obj != 255


def decode(res: dict[str, Any]) -> np.ndarray:
    w, h = res["original_width"], res["original_height"]
    return np.asarray(decode_rle(res["value"]["rle"])).reshape(h, w, 4)[:, :, 3] > 0


def metrics(backend: CamcutBackend) -> dict[str, Any]:
    r = requests.get(f"{backend.url}/metrics", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def poll(cond: Any, what: str, timeout: float, tail: Any) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s\n{tail()}")
        time.sleep(0.5)  # poll interval of the deadline-bounded wait for LS's webhooks + the re-fit


@pytest.fixture(scope="module")
def backend(label_studio: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CamcutBackend]:
    log_path = _REPO_ROOT / "out" / "e2e" / "backend-learning.log"
    server = CamcutBackend(label_studio, log_path, tmp_path_factory.mktemp("camcut-learning") / "model_dir")
    # heads may be kept from 20 objects (served: 200), so that the kept-head path runs on 104. The
    # threshold loop never adapts (CAMCUT_MIN_CORRECTIONS out of reach), so the candidate scores every
    # correction still gets (a featcut cut per candidate t, 9 by default) are never read: one candidate
    # keeps that path running at a ninth of its cost; the head's samples do not come from them.
    server.env.update(
        CAMCUT_CONFIG="featcut",
        CAMCUT_MIN_CORRECTIONS="100000",
        CAMCUT_HEAD_MIN_CORRECTIONS="20",
        CAMCUT_ADAPT_THRESHOLDS="0.5",
    )
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


def scored_ious(ls: Any, by_stem: dict[str, int], version: str) -> tuple[list[float], list[float]]:
    """IoU of camcut's mask (the prediction of ``version``) with the VOC instance, per object, and
    the score camcut gave it; each result is matched to the instance it overlaps most (the masks
    come from that object's box)."""
    out, scores = [], []
    for stem, tid in by_stem.items():
        [pred] = [p for p in ls.list_predictions(tid) if p.get("model_version") == version]
        gts, valid = instances(stem)
        for res in pred["result"]:
            m = decode(res) & valid
            out.append(max(float((m & g).sum() / max((m | g).sum(), 1)) for g in gts))
            scores.append(float(res["score"]))
    return out, scores


def annotation(stem: str) -> list[dict[str, Any]]:
    boxes = rects(stem)
    gts, _ = instances(stem)
    brush = [
        {
            **{k: r[k] for k in ("original_width", "original_height", "image_rotation", "to_name")},
            "id": f"m{i}",
            "type": "brushlabels",
            "from_name": "mask",
            "value": {"format": "rle", "rle": mask_to_rle(g), "brushlabels": r["value"]["rectanglelabels"]},
        }
        for i, r in enumerate(boxes)
        if (g := gts[int(r["id"][3:])]).any()
    ]
    return boxes + brush


def retrieve(ls: Any, pid: int, tasks: list[int]) -> None:
    """LS's retrieve action a few tasks at a time: one batched /predict of all 42 outlasts the
    harness's HTTP timeout on a loaded machine."""
    for k in range(0, len(tasks), 7):
        ls.retrieve_predictions(pid, tasks[k : k + 7])


def test_corrections_through_ls_reach_the_head_and_its_version(label_studio: Any, backend: CamcutBackend) -> None:
    t0 = time.monotonic()
    even, odd = halves()
    teach, scored = even, odd
    proj, by_stem = create_voc_project(
        label_studio, "camcut learning e2e", teach + scored, labels=(CLASS,), label_config=LABEL_CONFIG
    )
    pid = proj["id"]
    label_studio.connect_ml_backend(pid, backend.url, title="camcut", timeout=600)
    assert any(h["url"].rstrip("/") == f"{backend.url}/webhook" for h in label_studio.list_webhooks(pid))
    scored_tasks = {s: by_stem[s] for s in scored}

    retrieve(label_studio, pid, list(scored_tasks.values()))
    v0 = metrics(backend)["projects"][str(pid)]["model_version"]
    assert v0.startswith("camcut-featcut-")
    # LS's project follows camcut's version (backend/version_sync.py, a background PATCH)
    poll(lambda: label_studio.get_project(pid)["model_version"] == v0, "LS's project following", 60, backend.tail)
    before, scores0 = scored_ious(label_studio, scored_tasks, v0)

    n_objects = 0
    for stem in teach:
        result = annotation(stem)
        n_objects += sum(r["type"] == "brushlabels" for r in result)
        label_studio.create_annotation(by_stem[stem], result)

    def settled() -> dict[str, Any] | None:
        entry = metrics(backend)["projects"].get(str(pid), {})
        head = entry.get("head") or {}
        fit = head.get("last_fit")
        done = entry.get("events", {}).get("processed", 0) >= len(teach) and metrics(backend)["webhooks_waiting"] == 0
        # no re-fit due any more: fewer than REFIT_EVERY samples newer than the last fit
        return entry if done and fit and head["samples"] - fit[1] < REFIT_EVERY else None

    entry = poll(settled, "every annotation learned and the re-fits done", 1800, backend.tail)  # loaded machine
    head = entry["head"]
    v1 = entry["model_version"]
    kept = bool(head["version"])
    print(f"e2e learning: {n_objects} objects corrected on {len(teach)} tasks, head {head}, version {v0} -> {v1}")
    assert head["samples"] > 0.9 * n_objects  # (a tiny box is a fallback the head never sees)
    assert (v1 != v0) == kept

    if not kept:  # the training-free model, unchanged: nothing new to retrieve or score
        print(f"e2e learning: no head kept, last fit {head['last_fit']}; {time.monotonic() - t0:.0f} s (loaded machine)")
        return
    retrieve(label_studio, pid, list(scored_tasks.values()))
    poll(lambda: label_studio.get_project(pid)["model_version"] == v1, "LS's project following", 60, backend.tail)
    after, scores1 = scored_ious(label_studio, scored_tasks, v1)
    gain = float(np.mean(after) - np.mean(before))
    better = sum(a > b for a, b in zip(after, before, strict=True))
    worse = sum(a < b for a, b in zip(after, before, strict=True))
    rho0, rho1 = spearmanr(before, scores0).statistic, spearmanr(after, scores1).statistic
    print(
        f"e2e learning: scored {len(before)} objects on {len(scored)} tasks: mean IoU {np.mean(before):.4f} -> "
        f"{np.mean(after):.4f} ({gain:+.4f}), {better} better, {worse} worse; score Spearman rho {rho0:.3f} -> "
        f"{rho1:.3f}; {time.monotonic() - t0:.0f} s (loaded machine)"
    )
    if head["version"].startswith("s"):  # a score model alone (model/head.py score_head): the masks stay
        assert after == before and scores1 != scores0
        return
    assert better + worse > 0  # a kept head changes the masks LS gets
    # Not asserted: a gain, because none was measured. On this person project (session 5, shape
    # prior + MLP candidates, the gate of then: mean held-out gain > 0.005) the head kept at 80
    # corrections moved the 63 scored persons 0.6951 -> 0.6845 (35 better, 27 worse). The gate now
    # also asks for 2 standard errors of the per-object gain (model/head.py ``gate``); with it, run 2
    # kept an MLP head at 42 corrections: 0.6951 -> 0.6509 (25 better, 38 worse), so the MLP
    # candidate now needs 200 corrections (model/head.py MLP_MIN_OBJECTS; not run again here).
