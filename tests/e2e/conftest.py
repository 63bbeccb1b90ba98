"""Fixtures for end-to-end tests against a real Label Studio 1.23.2.

``label_studio`` (package scope: tests/e2e) installs Label Studio into ``.venv-ls`` if needed
(scripts/install_label_studio.sh), starts it headless on a free loopback port with a
throw-away SQLite DB, yields a :class:`tests.e2e.label_studio.LabelStudioServer`
(authenticated ``requests`` helpers included), and stops it after the last test of tests/e2e.
It and ``camcut_backend`` used to live until the end of the session: two idle servers through
the remaining ~70% of the suite, and a backend that keeps retrying a webhook it cannot process
(CI run 7b: "UNIQUE constraint failed ... annotation 1 given back", a CNN pass and cuts every
~65 s until the session ended) took CPU from the tests that followed.

If Label Studio cannot be installed or started the fixture FAILS the test (never
skips): an e2e run that silently skips proves nothing.

Env knobs:
  CAMCUT_LS_LOG             server log path (default out/e2e/label-studio.log)
  CAMCUT_LS_STARTUP_TIMEOUT seconds to wait for readiness (default 240)
  CAMCUT_LS_INSTALL_TIMEOUT seconds allowed for pip install (default 900)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from tests.e2e.label_studio import (  # noqa: E402
    LS_VERSION,
    CamcutBackend,
    LabelStudioError,
    LabelStudioServer,
    ensure_installed,
)

_TIMINGS: dict = {}


@pytest.fixture(scope="package")
def label_studio():
    log_path = Path(os.environ.get("CAMCUT_LS_LOG", _REPO_ROOT / "out" / "e2e" / "label-studio.log"))
    log_path.parent.mkdir(parents=True, exist_ok=True)

    try:
        _TIMINGS["install_s"] = round(ensure_installed(timeout=float(os.environ.get("CAMCUT_LS_INSTALL_TIMEOUT", 900))), 2)
    except (LabelStudioError, OSError) as exc:
        pytest.fail(f"Label Studio {LS_VERSION} could not be installed into .venv-ls: {exc}", pytrace=False)

    server = LabelStudioServer(
        log_path=log_path,
        startup_timeout=float(os.environ.get("CAMCUT_LS_STARTUP_TIMEOUT", 240)),
    )
    try:
        server.start()
    except (LabelStudioError, OSError) as exc:
        pytest.fail(f"Label Studio {LS_VERSION} could not be started (log: {log_path}): {exc}", pytrace=False)
    _TIMINGS["db_template_s"] = round(server.template_seconds, 2)
    _TIMINGS["startup_s"] = round(server.startup_seconds or 0.0, 2)
    _TIMINGS["url"] = server.url
    try:
        yield server
    finally:
        t0 = time.monotonic()
        server.stop()
        _TIMINGS["stop_s"] = round(time.monotonic() - t0, 2)
        try:
            (log_path.parent / "label-studio-timings.json").write_text(json.dumps(_TIMINGS, indent=1))
        except OSError:
            pass


@pytest.fixture(scope="package")
def camcut_backend(label_studio, tmp_path_factory):
    """camcut under gunicorn with the default settings, one for tests/e2e (a start costs 15-40 s
    loaded): test_backend_e2e, test_ux_e2e, test_browser_ux and test_browser_smart each make their
    own Label Studio project and connect it, and camcut keeps its state per project. Modules that
    need other settings (basic auth, the learned head) start their own."""
    log_path = Path(os.environ.get("CAMCUT_BACKEND_LOG", _REPO_ROOT / "out" / "e2e" / "backend.log"))
    server = CamcutBackend(label_studio, log_path, tmp_path_factory.mktemp("camcut-backend") / "model_dir")
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()
    assert label_studio.token not in log_path.read_text(errors="replace"), "the API key leaked into the backend log"


def pytest_terminal_summary(terminalreporter):
    if _TIMINGS:
        terminalreporter.write_line(
            "label-studio %s: install %.1fs (0 = already installed), DB template %.1fs (0 = cached), "
            "startup %.1fs, stop %.1fs"
            % (
                LS_VERSION,
                _TIMINGS.get("install_s", 0),
                _TIMINGS.get("db_template_s", 0),
                _TIMINGS.get("startup_s", 0),
                _TIMINGS.get("stop_s", 0),
            )
        )


def pytest_collection_modifyitems(config, items):
    """Everything under tests/e2e is an end-to-end test (``-m "not e2e"`` leaves them out)."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.e2e)
