"""The learned head through the Flask app and the fake Label Studio, on real VOC masks.

Corrections (VOC instance masks standing in for the annotator's, submitted with the predicted
region ids) arrive by webhook and are re-read from LS; each box correction leaves a head sample
in the store; once REFIT_EVERY are new the head is re-fitted (synchronously here:
CAMCUT_WEBHOOK_SYNC). Checked: samples and heads are in the store as arrays that load without
pickle; the model version changes exactly when the gate kept a head; a restarted app serves
the same version; a project without corrections keeps the training-free model exactly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from backend.learning import REFIT_EVERY, from_blob
from backend.results import mask_to_rle
from backend.store import Store
from tests.backend.conftest import LABEL_CONFIG, VOC, image_size, instance_masks, rect
from tests.pgserver import both

pytestmark = both  # the store on SQLite and on PostgreSQL

# Heads may be kept from this many corrected objects here (the served rule, CAMCUT_HEAD_MIN_CORRECTIONS
# = model.head.MIN_OBJECTS, needs 200: too many for a unit test of the plumbing).
MIN_OBJECTS = 20
LABELS = {"dog": "dog", "cat": "Cat", "person": "people", "chair": "chair"}
# The threshold loop never adapts here (CAMCUT_MIN_CORRECTIONS out of reach): only the head may move
# the version. Its candidate scores are still computed for every correction (a featcut cut per
# candidate t; 9 by default) but never read: one candidate keeps that path running at a ninth of the
# cost. The head's samples come from the image's features (correction_sample), not from the scores.
ENV = {
    "CAMCUT_CONFIG": "featcut",
    "CAMCUT_MIN_CORRECTIONS": "100000",
    "CAMCUT_HEAD_MIN_CORRECTIONS": str(MIN_OBJECTS),
    "CAMCUT_ADAPT_THRESHOLDS": "0.5",
}


def stems_with_objects(n_objects: int) -> list[str]:
    """The first VOC images (sorted) whose instances are all of LABELS' classes, enough for n_objects."""
    out, total = [], 0
    for p in sorted((VOC / "SegmentationObject").glob("*.png")):
        inst = instance_masks(p.stem)
        if inst and all(c in LABELS for c, _ in inst):
            out.append(p.stem)
            total += len(inst)
            if total >= n_objects:
                break
    return out


def boxes_of(stem: str) -> list[tuple[str, np.ndarray, tuple[float, float, float, float]]]:
    out = []
    for c, m in instance_masks(stem):
        ys, xs = np.nonzero(m)
        out.append((c, m, (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))))
    return out


def predict(client: Any, stem: str, tid: int, project: str) -> dict[str, Any]:
    w, h = image_size(stem)
    rects = [rect(LABELS[c], b, w, h, f"b{i}") for i, (c, _, b) in enumerate(boxes_of(stem))]
    task = {"id": tid, "data": {"image": f"/data/upload/1/{stem}.jpg"}, "predictions": [{"result": rects}]}
    r = client.post("/predict", json={"tasks": [task], "project": project, "label_config": LABEL_CONFIG})
    [pred] = r.get_json()["results"]
    return pred


def test_corrections_teach_a_head_kept_in_the_store(app_factory: Any, tmp_path: Path, ls_server: Any, database_url: str) -> None:
    stems = stems_with_objects(MIN_OBJECTS + REFIT_EVERY)
    app = app_factory(**ENV)
    client = app.test_client()
    other = stems[0]
    untaught_before = predict(client, other, 9000, "43.1")
    v0 = client.post("/setup", json={"project": "42.1", "schema": LABEL_CONFIG}).get_json()["model_version"]
    v_other = client.post("/setup", json={"project": "43.1", "schema": LABEL_CONFIG}).get_json()["model_version"]
    assert v0 == v_other  # no corrections anywhere yet: one training-free version

    ls_server.projects[42] = {"id": 42, "label_config": LABEL_CONFIG}
    n_boxes = 0
    for k, stem in enumerate(stems):
        pred = predict(client, stem, 2000 + k, "42.1")
        w, h = image_size(stem)
        brush = [
            {
                "id": res["id"],
                "type": "brushlabels",
                "from_name": "mask",
                "to_name": "image",
                "original_width": w,
                "original_height": h,
                "image_rotation": 0,
                "value": {"format": "rle", "rle": mask_to_rle(gt), "brushlabels": [LABELS[c]]},
            }
            for res, (c, gt, _) in zip(pred["result"], boxes_of(stem), strict=False)
        ]
        n_boxes += len(brush)
        task = {"id": 2000 + k, "data": {"image": f"/data/upload/1/{stem}.jpg"}, "project": 42}
        ann = {"id": 3000 + k, "task": 2000 + k, "project": 42, "result": brush, "updated_at": "2025-02-01T00:00:00Z"}
        ls_server.tasks[task["id"]], ls_server.annotations[ann["id"]] = task, ann
        ev = {"action": "ANNOTATION_CREATED", "project": {"id": 42}, "annotation": {"id": ann["id"]}}
        assert client.post("/webhook", json=ev).get_json()["status"] == "processed"

    store = Store(tmp_path / "model_dir", database_url)
    with store.transaction(write=False) as db:
        samples = db.execute("SELECT arrays FROM head_samples WHERE project='42'").fetchall()
        heads = db.execute("SELECT voc_class, version, arrays FROM heads WHERE project='42'").fetchall()
        fit = db.execute("SELECT samples, accepted, detail FROM head_fits WHERE project='42'").fetchone()
    assert 0 < len(samples) <= n_boxes
    a = from_blob(samples[0][0])  # np.load(..., allow_pickle=False): arrays, nothing pickled
    assert a["x"].dtype == np.float16 and a["y"].dtype == bool and len(a["x"]) == len(a["y"]) > 0
    assert fit is not None, "no re-fit ran"
    v1 = client.post("/setup", json={"project": "42.1", "schema": LABEL_CONFIG}).get_json()["model_version"]
    print("head fit:", fit, "version", v0, "->", v1)
    if fit[1]:
        assert heads and v1 != v0
        assert all(from_blob(b)["format"][0] == 1 for _, _, b in heads)
    else:
        assert not heads and v1 == v0

    # A restarted backend on the same MODEL_DIR serves the same version (the heads live in the store).
    again = app_factory(**ENV).test_client()
    assert again.post("/setup", json={"project": "42.1", "schema": LABEL_CONFIG}).get_json()["model_version"] == v1
    # The project without corrections keeps the training-free model: same version, same masks.
    assert client.post("/setup", json={"project": "43.1", "schema": LABEL_CONFIG}).get_json()["model_version"] == v0
    untaught_after = predict(client, other, 9000, "43.1")
    assert [r["value"]["rle"] for r in untaught_after["result"]] == [r["value"]["rle"] for r in untaught_before["result"]]


def test_corrections_stored_during_a_fit_are_new_to_the_next(tmp_path: Path, database_url: str, monkeypatch: Any) -> None:
    """A re-fit takes up to FIT_BUDGET_S; corrections stored meanwhile were not in it. They used to
    count as fitted (the fit was stamped with its end time), so REFIT_EVERY of them left no re-fit due."""
    import backend.learning as learning
    from model.head import N_PIXEL, ObjectSample

    store = Store(tmp_path / "model_dir", database_url)
    rng = np.random.default_rng(0)

    def write(aid: int, n: int) -> None:
        samples = [
            (f"r{i}", ObjectSample("dog", rng.random((8, N_PIXEL)).astype(np.float16), rng.random(8) > 0.5)) for i in range(n)
        ]
        with store.transaction() as db:
            learning.write_samples(db, "7", aid, "2025-02-01T00:00:00Z", samples)

    real_fit = learning.fit_heads

    def fit_while_corrections_arrive(*a: Any, **kw: Any) -> Any:
        write(2, REFIT_EVERY)  # the webhook worker stores a new annotation's samples during the fit
        return real_fit(*a, **kw)

    write(1, REFIT_EVERY)
    learner = learning.Learner(store, enabled=True)
    assert learner.due() == ["7"]
    monkeypatch.setattr(learning, "fit_heads", fit_while_corrections_arrive)
    learner.refit("7")
    assert learner.status("7")["last_fit"][1] == REFIT_EVERY  # the fit saw the first annotation only
    assert learner.due() == ["7"], "the corrections stored during the fit are never fitted"


def test_samples_keep_the_shape_prior_arrays_and_their_image(tmp_path: Path, database_url: str) -> None:
    """The shape prior (model/shapeprior.py) needs each sample's box coordinates and corrected
    shape, the ring head (model/head.py ring_head) its answer with the ring prior, and the gate
    holds out whole annotations: all four survive the store (as arrays); a sample without the
    ring answer (stored before it) loads without one."""
    import backend.learning as learning
    from model.head import N_PIXEL, ObjectSample
    from model.shapeprior import SIZE

    store = Store(tmp_path / "model_dir", database_url)
    rng = np.random.default_rng(1)
    s = ObjectSample(
        "dog", rng.random((8, N_PIXEL)).astype(np.float16), rng.random(8) > 0.5, 0.7, 0.6,
        rng.random((8, 2)).astype(np.float16), rng.random((SIZE, SIZE)).astype(np.float16), ring=rng.random(8) > 0.5,
    )  # fmt: skip
    old = dataclasses.replace(s, ring=None)
    with store.transaction() as db:
        learning.write_samples(db, "7", 42, "2025-02-01T00:00:00Z", [("r0", s), ("r1", old)])
    got = learning.load_samples(store, "7")
    assert len(got) == 2
    assert got[0].uv is not None and np.array_equal(got[0].uv, s.uv)
    assert got[0].shape is not None and np.array_equal(got[0].shape, s.shape)
    assert got[0].ring is not None and got[0].ring.dtype == bool and np.array_equal(got[0].ring, s.ring)
    assert got[1].ring is None
    assert got[0].group == got[1].group != ""  # one annotation: one image
