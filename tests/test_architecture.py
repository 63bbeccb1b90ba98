"""The rooms of docs/architecture.md: what each package may import at module level.

Read from the source with ``ast`` (no import side effects). A function-level import is allowed
where a module needs a library only to set it up (e.g. the bulk workers' thread limits).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

WEB = {"flask", "werkzeug", "requests", "gunicorn", "h11", "label_studio_sdk", "cvat_sdk", "nuclio_sdk"}
PIXELS = {"cv2", "scipy", "torch", "maxflow", "pydensecrf", "skimage"}
RULES: dict[str, set[str]] = {
    "model": WEB | {"backend", "cvat", "evaluator", "bench", "camcut"},
    "backend": PIXELS | {"cvat", "evaluator", "bench"},
    "cvat": PIXELS | {"evaluator", "bench"},
    "evaluator": {"backend", "cvat", "flask", "werkzeug"},
}


def module_level_imports(path: Path) -> set[str]:
    """Top-level package names imported outside any function or class body."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("room", sorted(RULES))
def test_room_imports_only_what_it_may(room: str) -> None:
    files = sorted((ROOT / room).rglob("*.py"))
    if room != "cvat":
        assert files, f"{room}/ has no Python files"
    bad = {str(f.relative_to(ROOT)): sorted(module_level_imports(f) & RULES[room]) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_checker_sees_imports(tmp_path: Path) -> None:
    """The checker itself: it reports a forbidden top-level import and ignores a function-level one."""
    f = tmp_path / "m.py"
    f.write_text("import os\nfrom flask import Flask\n\ndef g():\n    import cv2\n")
    assert module_level_imports(f) == {"os", "flask"}
