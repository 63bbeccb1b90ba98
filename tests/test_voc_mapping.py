"""Pins the ImageNet-1k -> PASCAL VOC translation table (model/data/imagenet_to_voc.json)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from model import voc
from model.voc import (
    CLASSES_WITHOUT_IMAGENET,
    IMAGENET_CATEGORIES,
    MAPPING_VERSION,
    VOC_CLASSES,
    UnknownClassError,
    cam_members,
    context_members,
    imagenet_members,
    voc_class_of,
    voc_index,
)

REPO = Path(__file__).resolve().parent.parent
TABLE = json.loads((REPO / "model" / "data" / "imagenet_to_voc.json").read_text(encoding="utf-8"))
CATEGORIES = json.loads((REPO / "model" / "weights" / "imagenet1k_categories.json").read_text(encoding="utf-8"))

EXPECTED_VOC = (
    "aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog "
    "horse motorbike person pottedplant sheep sofa train tvmonitor"
).split()


def idx(name: str) -> int:
    """ImageNet index of a torchvision class name (must be unique)."""
    hits = [i for i, n in enumerate(CATEGORIES) if n == name]
    assert len(hits) == 1, f"{name!r} found {len(hits)} times in imagenet1k_categories.json"
    return hits[0]


# --- the VOC vocabulary -----------------------------------------------------


def test_voc_classes_are_the_20_in_voc_order() -> None:
    assert VOC_CLASSES == tuple(EXPECTED_VOC)
    assert list(TABLE["classes"]) == EXPECTED_VOC


def test_voc_index_is_position_plus_one() -> None:
    assert voc_index("aeroplane") == 1
    assert voc_index("dog") == 12
    assert voc_index("tvmonitor") == 20
    assert [voc_index(c) for c in EXPECTED_VOC] == list(range(1, 21))


@pytest.mark.parametrize("name", ["DOG", "Dog", "dOg", "TvMonitor", "DiningTable"])
def test_names_are_case_insensitive(name: str) -> None:
    assert voc_index(name) == EXPECTED_VOC.index(name.lower()) + 1
    assert imagenet_members(name) == imagenet_members(name.lower())


@pytest.mark.parametrize("name", ["", "dogs", "dining table", "tv", "background", "airplane", " dog"])
def test_unknown_names_raise(name: str) -> None:
    with pytest.raises(UnknownClassError) as info:
        voc_index(name)
    # the message lists the valid names
    for valid in EXPECTED_VOC:
        assert valid in str(info.value)
    with pytest.raises(UnknownClassError):
        imagenet_members(name)


def test_unknown_class_error_is_a_value_error() -> None:
    assert issubclass(UnknownClassError, ValueError)
    with pytest.raises(ValueError):
        imagenet_members("unicorn")


# --- the table itself ---------------------------------------------------------


def test_version_matches_module() -> None:
    assert isinstance(MAPPING_VERSION, str) and MAPPING_VERSION
    assert TABLE["version"] == MAPPING_VERSION


def test_imagenet_categories_loaded() -> None:
    assert len(IMAGENET_CATEGORIES) == 1000
    assert IMAGENET_CATEGORIES == tuple(CATEGORIES)
    assert IMAGENET_CATEGORIES[151] == "Chihuahua"


def test_json_names_and_wnids_line_up_with_categories() -> None:
    for voc_class, entries in TABLE["classes"].items():
        for e in entries:
            assert 0 <= e["index"] < 1000
            assert e["name"] == CATEGORIES[e["index"]], (voc_class, e)
            assert re.fullmatch(r"n\d{8}", e["wnid"]), e
            assert e["via"].startswith(("wordnet: ", "manual: ")), e


def test_wnids_are_distinct() -> None:
    wnids = [e["wnid"] for entries in TABLE["classes"].values() for e in entries]
    assert len(wnids) == len(set(wnids))


def test_no_index_maps_to_two_classes() -> None:
    seen: dict[int, str] = {}
    for voc_class, entries in TABLE["classes"].items():
        for e in entries:
            assert e["index"] not in seen, f"{e['index']} in {seen.get(e['index'])} and {voc_class}"
            seen[e["index"]] = voc_class
    # and the module agrees with the JSON in both directions
    for i in range(1000):
        assert voc_class_of(i) == seen.get(i)


def test_members_are_sorted_and_match_json() -> None:
    for voc_class, entries in TABLE["classes"].items():
        members = imagenet_members(voc_class)
        assert members == tuple(sorted(members))
        assert members == tuple(sorted(e["index"] for e in entries))


def test_classes_without_imagenet_are_exactly_the_empty_ones() -> None:
    empty = {c for c, entries in TABLE["classes"].items() if not entries}
    assert CLASSES_WITHOUT_IMAGENET == frozenset(empty)
    for c in CLASSES_WITHOUT_IMAGENET:
        assert imagenet_members(c) == ()


def test_every_manual_decision_carries_a_reason() -> None:
    for entries in TABLE["classes"].values():
        for e in entries:
            if e["via"].startswith("manual: "):
                assert len(e["via"]) > len("manual: ") + 20, e
    for entries in TABLE.get("excluded", {}).values():
        for e in entries:
            assert e["why"].startswith("manual: "), e
            assert voc_class_of(e["index"]) is None, e


# --- pinned members -------------------------------------------------------------


def test_all_118_dog_breeds_are_dog() -> None:
    assert all(voc_class_of(i) == "dog" for i in range(151, 269))
    assert imagenet_members("dog") == tuple(range(151, 269))
    assert len(imagenet_members("dog")) == 118


def test_wolves_and_foxes_are_not_dog() -> None:
    # 269 timber wolf .. 280 grey fox: canines, not domestic dogs
    for i in range(269, 281):
        assert voc_class_of(i) is None, CATEGORIES[i]


def test_domestic_cats_are_cat_and_wild_cats_are_not() -> None:
    assert CATEGORIES[281:286] == ["tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"]
    assert imagenet_members("cat") == (281, 282, 283, 284, 285)
    for i in range(286, 294):  # cougar, lynx, leopard, snow leopard, jaguar, lion, tiger, cheetah
        assert voc_class_of(i) != "cat", CATEGORIES[i]
        assert voc_class_of(i) is None, CATEGORIES[i]


def test_ram_and_bighorn_are_sheep() -> None:
    assert CATEGORIES[348] == "ram" and CATEGORIES[349] == "bighorn"
    assert voc_class_of(348) == "sheep"
    assert voc_class_of(349) == "sheep"
    assert voc_class_of(idx("ibex")) is None  # a goat


@pytest.mark.parametrize(
    ("imagenet_name", "voc_class"),
    [
        ("studio couch", "sofa"),
        ("dining table", "diningtable"),
        ("airliner", "aeroplane"),
        ("warplane", "aeroplane"),
        ("school bus", "bus"),
        ("sports car", "car"),
        ("mountain bike", "bicycle"),
        ("television", "tvmonitor"),
        ("monitor", "tvmonitor"),
        ("ox", "cow"),
        ("sorrel", "horse"),
        ("moped", "motorbike"),
        ("ballplayer", "person"),
        ("scuba diver", "person"),
        ("bullet train", "train"),
        ("steam locomotive", "train"),
        ("canoe", "boat"),
        ("container ship", "boat"),
        ("wine bottle", "bottle"),
        ("rocking chair", "chair"),
        ("goldfinch", "bird"),
        ("bald eagle", "bird"),
    ],
)
def test_pinned_members(imagenet_name: str, voc_class: str) -> None:
    assert voc_class_of(idx(imagenet_name)) == voc_class
    assert idx(imagenet_name) in imagenet_members(voc_class)


def test_pinned_indices() -> None:
    assert CATEGORIES[831] == "studio couch" and voc_class_of(831) == "sofa"
    assert CATEGORIES[532] == "dining table" and voc_class_of(532) == "diningtable"
    assert voc_class_of(404) == "aeroplane"  # airliner


@pytest.mark.parametrize(
    "imagenet_name",
    [
        "zebra",  # equine, not a horse
        "water buffalo",  # bovid, not cattle
        "bison",
        "streetcar",  # VOC train excludes trams
        "laptop",  # not a stand-alone screen
        "park bench",  # a seat, not a chair
        "horse cart",  # a cart, not a horse
        "water jug",  # WordNet jug < bottle, removed manually
        "airship",  # aircraft but not an aeroplane
        "pickup",  # a truck
        "daisy",  # a flower, not a potted plant
        "vase",
        "desk",  # a table, not a dining table
    ],
)
def test_pinned_non_members(imagenet_name: str) -> None:
    assert voc_class_of(idx(imagenet_name)) is None


def test_every_class_has_the_documented_count() -> None:
    counts = {c: len(imagenet_members(c)) for c in VOC_CLASSES}
    assert counts == {
        "aeroplane": 2,
        "bicycle": 4,
        "bird": 59,
        "boat": 15,
        "bottle": 5,
        "bus": 3,
        "car": 12,
        "cat": 5,
        "chair": 4,
        "cow": 1,
        "diningtable": 1,
        "dog": 118,
        "horse": 1,
        "motorbike": 2,
        "person": 3,
        "pottedplant": 1,
        "sheep": 2,
        "sofa": 1,
        "train": 5,
        "tvmonitor": 3,
    }


def test_voc_class_of_rejects_bad_indices() -> None:
    with pytest.raises(IndexError):
        voc_class_of(1000)
    with pytest.raises(IndexError):
        voc_class_of(-1)
    with pytest.raises(TypeError):
        voc_class_of(3.0)  # type: ignore[arg-type]
    assert voc.voc_class_of(0) is None  # tench


# --- context classes (the "context" section: pooled by a CAM, never owned) ------------------------


def test_person_context_is_imagenets_clothing_and_no_index_is_owned_by_it() -> None:
    ctx = TABLE["context"]
    assert list(ctx) == ["person"] and ctx["person"]["root"] == "clothing.n.01"
    entries = ctx["person"]["members"]
    assert len(entries) == 49
    names = {e["name"] for e in entries}
    assert {"jersey", "suit", "sweatshirt", "jean", "military uniform", "cowboy hat"} <= names
    for e in entries:
        assert e["name"] == CATEGORIES[e["index"]], e
        assert e["via"].startswith("wordnet: ") and e["via"].endswith("> clothing.n.01"), e
        assert voc_class_of(e["index"]) is None, e  # context never owns: class probabilities are unchanged
    assert context_members("person") == tuple(sorted(e["index"] for e in entries))


def test_cam_members_add_the_context_only_when_asked() -> None:
    for c in EXPECTED_VOC:
        assert cam_members(c) == imagenet_members(c)
        if c != "person":
            assert context_members(c) == () and cam_members(c, context=True) == imagenet_members(c)
    both = cam_members("PERSON", context=True)
    assert both == tuple(sorted(set(imagenet_members("person")) | set(context_members("person"))))
    assert idx("ballplayer") in both and idx("jersey") in both and idx("jersey") not in cam_members("person")
