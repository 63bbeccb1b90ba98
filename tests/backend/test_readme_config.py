"""The README's example label config (issue 13): camcut's schema reads it, and every button row
has its own hotkeys, none of them one of Label Studio 1.23.2's own labelling-view keys."""

from __future__ import annotations

import re
from pathlib import Path
from xml.etree import ElementTree  # the README's own text, not input

from backend.schema import parse_schema

README = Path(__file__).resolve().parents[2] / "README.md"
# the labelling view's own keys in Label Studio 1.23.2 (editor keymap: tools B E H K M O P R V W,
# brush size [ ], undo u, zoom shift+1 / shift+2); a label with one of them fights the tool
EDITOR_KEYS = frozenset("behkmoprvwu[]") | {"shift+1", "shift+2"}


def example_config() -> str:
    text = README.read_text(encoding="utf-8")
    m = re.search(r"<!-- example-config:start -->\s*```xml\n(.*?)```\s*<!-- example-config:end -->", text, re.S)
    assert m, "README.md has no example-config block"
    return m.group(1)


def test_readme_config_is_read_by_the_schema() -> None:
    s = parse_schema(example_config())
    assert (s.brush_from, s.image_to, s.value_key) == ("mask", "image", "image")
    assert s.brush_labels == ("dog", "cat", "person")
    assert s.rect_from == {"box"} and s.keypoint_from == {"click"} and s.choices_from == {"tags"}


def test_readme_config_hotkeys_are_explicit_unique_and_clear_of_the_editor() -> None:
    root = ElementTree.fromstring(example_config())
    buttons = [el for el in root.iter() if el.tag in ("Label", "Choice")]
    assert len(buttons) == 12
    keys = [el.get("hotkey") for el in buttons]
    # explicit everywhere: Label Studio numbers the rest across all rows in one sequence
    assert all(keys), [el.get("value") for el in buttons if not el.get("hotkey")]
    assert len(set(keys)) == len(keys), keys
    assert not {k.lower() for k in keys if k} & EDITOR_KEYS
