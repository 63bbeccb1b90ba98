"""The ``camcut`` console script (camcut/cli.py): every command answers --help, as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import camcut.cli

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "camcut"


def camcut_script(*args: str) -> subprocess.CompletedProcess[str]:
    if not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} is not installed (make install: pip install --no-deps -e .)")
    return subprocess.run(
        [str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=180, env={**os.environ, "PYTHONPATH": str(REPO)}
    )


def test_camcut_help_lists_every_command() -> None:
    r = camcut_script("--help")
    assert r.returncode == 0, r.stderr
    for name in camcut.cli.COMMANDS:
        assert f"  {name} " in r.stdout


@pytest.mark.parametrize(
    "command, expect",
    [
        ("serve", "gunicorn"),
        ("segment", "--box"),
        ("eval", "--voc"),
        ("bench", "--configs"),
        ("bulk", "--project"),
        ("config", "--markdown"),
    ],
)
def test_every_command_explains_itself(command: str, expect: str) -> None:
    r = camcut_script(command, "--help")
    assert r.returncode == 0, r.stderr
    assert expect in r.stdout


def test_unknown_command_is_a_usage_error() -> None:
    r = camcut_script("frobnicate")
    assert r.returncode == 2 and "unknown command" in r.stderr


@pytest.mark.parametrize(
    "argv, config",
    [(["x.jpg"], "served"), (["x.jpg", "--config", "reference"], "reference"), (["x.jpg", "--config=quality"], None)],
)
def test_segment_serves_the_default_configuration_unless_told(argv: list[str], config: str | None, monkeypatch: Any) -> None:
    import model.cli

    seen: list[list[str]] = []
    monkeypatch.setattr(model.cli, "main", lambda a: seen.append(a) or 0)
    assert camcut.cli.main(["segment", *argv]) == 0
    assert seen[0].count("--config") + sum(a.startswith("--config=") for a in seen[0]) == 1
    if config == "served":  # backend/config.py's CAMCUT_CONFIG default, whatever it is
        from backend.config import read_setting

        config = read_setting("CAMCUT_CONFIG")
    if config is not None:
        assert seen[0][seen[0].index("--config") + 1] == config
