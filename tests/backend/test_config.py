"""backend/config.py: the settings table is the one source of Settings, the listing and the README's table."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from backend.config import SETTINGS, ConfigError, Settings, describe, markdown_table
from backend.redaction import register_secret

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_settings_section() -> str:
    m = re.search(r"<!-- settings:start[^>]*-->\n(.*?)\n<!-- settings:end -->", README.read_text(encoding="utf-8"), re.S)
    assert m, "README.md has no <!-- settings:start --> ... <!-- settings:end --> section"
    return m.group(1).strip()


def test_readme_configuration_table_is_the_generated_one() -> None:
    """Regenerate with: python -m backend.config --markdown"""
    assert readme_settings_section() == markdown_table()


def test_every_setting_is_one_field_one_variable_and_listed() -> None:
    assert [f.name for f in dataclasses.fields(Settings)] == [s.name for s in SETTINGS]
    assert len({s.env for s in SETTINGS}) == len(SETTINGS)
    listing = describe()
    assert all(s.env in listing for s in SETTINGS)


def test_defaults_parse_and_are_used() -> None:
    s = Settings.from_env({"HOME": "/home/u", "THREADS": "3"})
    assert s.port == 9090 and s.bind == "0.0.0.0:9090" and s.max_inflight == 2 and s.cut_threads >= 1
    assert s.torch_threads == 1 and Settings.from_env({"CAMCUT_TORCH_THREADS": "0"}).torch_threads == 0
    assert s.model_dir == Path("/home/u/.local/state/camcut")
    assert Settings.from_env({"XDG_STATE_HOME": "/var/st"}).model_dir == Path("/var/st/camcut")
    assert Settings.from_env({"MODEL_DIR": "/data/md"}).model_dir == Path("/data/md")
    assert Settings.from_env({"CAMCUT_BIND": "::1", "PORT": "9000"}).bind == "[::1]:9000"


@pytest.mark.parametrize(
    "env, name",
    [
        ({"PORT": "x"}, "PORT"),
        ({"CAMCUT_MAX_CLASSES": "0"}, "CAMCUT_MAX_CLASSES"),
        ({"CAMCUT_ADAPT_THRESHOLDS": "0.5,1.5"}, "CAMCUT_ADAPT_THRESHOLDS"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
    ],
)
def test_bad_values_name_their_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(env)


def test_secrets_lists_key_password_and_access_tokens() -> None:
    s = Settings.from_env({"LABEL_STUDIO_API_KEY": "key-123456", "BASIC_AUTH_USER": "u", "BASIC_AUTH_PASS": "pass-123456"})
    assert {"key-123456", "pass-123456"} <= set(s.secrets)
    register_secret("access-jwt-abcdef")
    assert "access-jwt-abcdef" in s.secrets
    assert "key-123456" not in repr(s) and "pass-123456" not in repr(s)
