"""Protocol surface: health, setup, auth, malformed input, model versions, labels."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from backend.config import read_setting
from backend.labels import LabelMap, LabelMapError
from tests.backend.conftest import LABEL_CONFIG

NO_BRUSH = """<View><Image name="image" value="$image"/>
<RectangleLabels name="box" toName="image"><Label value="dog"/></RectangleLabels></View>"""


def setup_version(client: Any, project: str = "3.1700000000") -> str:
    r = client.post(
        "/setup",
        json={"project": project, "schema": LABEL_CONFIG, "hostname": "http://x", "access_token": "t", "extra_params": None},
    )
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()["model_version"]


def test_health_and_metrics(client: Any) -> None:
    for path in ("/", "/health"):
        r = client.get(path)
        assert r.status_code == 200 and r.get_json()["status"] == "UP"
    m = client.get("/metrics").get_json()
    served = read_setting("CAMCUT_CONFIG", {})  # the configuration served when CAMCUT_CONFIG is unset
    assert m["engine"].startswith(f"{served}:") and len(m["weights_sha256"]) == 64


def test_basic_auth(app_factory: Any) -> None:
    client = app_factory(BASIC_AUTH_USER="ls", BASIC_AUTH_PASS="pw-123456").test_client()
    assert client.get("/health").status_code == 200  # health stays open
    assert client.post("/setup", json={"project": "1.1", "schema": LABEL_CONFIG}).status_code == 401
    bad = base64.b64encode(b"ls:wrong").decode()
    assert client.post("/predict", json={"tasks": []}, headers={"Authorization": f"Basic {bad}"}).status_code == 401
    assert client.get("/metrics").status_code == 401
    good = {"Authorization": "Basic " + base64.b64encode(b"ls:pw-123456").decode()}
    assert client.post("/setup", json={"project": "1.1", "schema": LABEL_CONFIG}, headers=good).status_code == 200
    assert client.get("/metrics", headers=good).status_code == 200


@pytest.mark.parametrize("path", ["/predict", "/setup", "/webhook"])
def test_malformed_json_is_400(client: Any, path: str) -> None:
    r = client.post(path, data="{not json", content_type="application/json")
    assert r.status_code == 400 and "not valid JSON" in r.get_json()["error"]
    r = client.post(path, data="[1, 2]", content_type="application/json")
    assert r.status_code == 400 and "JSON object" in r.get_json()["error"]


def test_tasks_must_be_a_list(client: Any) -> None:
    r = client.post("/predict", json={"tasks": {"id": 1}, "label_config": LABEL_CONFIG})
    assert r.status_code == 400 and "'tasks' must be a list" in r.get_json()["error"]


@pytest.mark.parametrize(
    "config, message", [(NO_BRUSH, "no <BrushLabels>"), ("<View><Image", "not valid XML"), ("", "no labelling config")]
)
def test_config_without_brushlabels(client: Any, config: str, message: str) -> None:
    r = client.post("/setup", json={"project": "1.1", "schema": config})
    assert r.status_code == 400 and message in r.get_json()["error"]
    r = client.post("/predict", json={"tasks": [{"id": 1, "data": {"image": "/x.jpg"}}], "label_config": config})
    assert r.status_code == 400 and message in r.get_json()["error"]


def test_a_non_object_task_fails_alone(client: Any) -> None:
    r = client.post("/predict", json={"tasks": ["oops", {"id": 2, "data": {}}], "label_config": LABEL_CONFIG})
    out = r.get_json()["results"]
    assert r.status_code == 200 and len(out) == 2 and "JSON object" in out[0]["error"] and "no 'image' field" in out[1]["error"]


def test_model_version_changes_with_technique_and_threshold(app_factory: Any, tmp_path: Path) -> None:
    base = setup_version(app_factory().test_client())
    assert base == setup_version(app_factory().test_client())  # stable
    assert base == setup_version(app_factory(CAMCUT_BOX_TECHNIQUE="fpf 0.7").test_client())  # the default spelled out
    versions = {
        base,
        setup_version(app_factory(CAMCUT_BOX_TECHNIQUE="fpf 0.5").test_client()),
        setup_version(app_factory(CAMCUT_BOX_TECHNIQUE="pfpb 0.5").test_client()),
        setup_version(app_factory(CAMCUT_BOX_TECHNIQUE="grabcut").test_client()),
        setup_version(app_factory(CAMCUT_CLASS_TECHNIQUE="pfpb 0.4").test_client()),
    }
    mapping = tmp_path / "labels.json"
    mapping.write_text(json.dumps({"doggo": "dog"}))
    versions.add(setup_version(app_factory(CAMCUT_LABEL_MAP=str(mapping)).test_client()))
    assert len(versions) == 6


def test_bad_technique_env_is_refused(app_factory: Any) -> None:
    with pytest.raises(ValueError, match="CAMCUT_BOX_TECHNIQUE"):
        app_factory(CAMCUT_BOX_TECHNIQUE="magic 0.5")
    with pytest.raises(ValueError, match="naked grabcut"):
        app_factory(CAMCUT_CLASS_TECHNIQUE="grabcut")


@pytest.mark.parametrize(
    "label, voc",
    [
        ("Person", "person"),
        ("people", "person"),
        ("Pedestrian", "person"),
        ("tv", "tvmonitor"),
        ("TV Monitor", "tvmonitor"),
        ("television", "tvmonitor"),
        ("airplane", "aeroplane"),
        ("Plane", "aeroplane"),
        ("motorcycle", "motorbike"),
        ("dining table", "diningtable"),
        ("dining_table", "diningtable"),
        ("table", "diningtable"),
        ("potted plant", "pottedplant"),
        ("plant", "pottedplant"),
        ("couch", "sofa"),
        ("bike", "bicycle"),
        ("DOG", "dog"),
        ("widget", None),
    ],
)
def test_label_synonyms(label: str, voc: str | None) -> None:
    assert LabelMap().resolve(label) == voc


def test_label_map_file(tmp_path: Path) -> None:
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"Doggo": "dog", "plant": None, "Kiosk Screen": "TV Monitor"}))
    m = LabelMap.from_file(p)
    assert m.resolve("doggo") == "dog" and m.resolve("plant") is None and m.resolve("kiosk screen") == "tvmonitor"
    assert m.resolve("couch") == "sofa"  # built-ins still apply
    assert m.version != LabelMap().version
    p.write_text(json.dumps({"x": "unicorn"}))
    with pytest.raises(LabelMapError, match="not a VOC class"):
        LabelMap.from_file(p)
    p.write_text("{oops")
    with pytest.raises(LabelMapError, match="JSON"):
        LabelMap.from_file(p)
    with pytest.raises(LabelMapError, match="not found"):
        LabelMap.from_file(tmp_path / "nope.json")


def test_mapping_file_used_in_predictions(app_factory: Any, tmp_path: Path) -> None:
    from tests.backend.conftest import image_size, rect, voc_boxes

    p = tmp_path / "m.json"
    p.write_text(json.dumps({"widget": "dog"}))
    client = app_factory(CAMCUT_LABEL_MAP=str(p)).test_client()
    w, h = image_size("2007_000063")
    task = {
        "id": 5,
        "data": {"image": "/data/upload/1/2007_000063.jpg"},
        "predictions": [{"result": [rect("widget", voc_boxes("2007_000063")[0][1], w, h)]}],
    }
    [pred] = client.post("/predict", json={"tasks": [task], "project": "1.1", "label_config": LABEL_CONFIG}).get_json()["results"]
    assert pred["result"][0]["meta"] == {"technique": "F PF 0.7", "voc_class": "dog"} and "warnings" not in pred


def test_unknown_webhook_event(client: Any) -> None:
    r = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 1}})
    assert r.status_code == 200 and r.get_json()["status"] == "Unknown event"
    r = client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": 1}})
    assert r.status_code == 201
    r = client.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": 1}})
    assert r.status_code == 400 and "annotation.id" in r.get_json()["error"]


def test_model_version_follows_the_tag_working_size(app_factory: Any) -> None:
    """CAMCUT_TAG_WORK_PIXELS changes the tag masks of large images, so it changes the version
    (a prediction made at another working size is not the current model's)."""
    base = setup_version(app_factory().test_client())
    assert setup_version(app_factory().test_client()) == base
    assert setup_version(app_factory(CAMCUT_TAG_WORK_PIXELS="1000000").test_client()) != base
