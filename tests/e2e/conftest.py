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
import threading
import time
from pathlib import Path

import pytest

_REPO_ROOT = Path(__file__).resolve().parents[2]
if str(_REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(_REPO_ROOT))

from tests.e2e.label_studio import (  # noqa: E402
    DEFAULT_DB_TEMPLATE,
    DEFAULT_VENV,
    LS_VERSION,
    CamcutBackend,
    LabelStudioError,
    LabelStudioServer,
    ensure_installed,
)

_TIMINGS: dict = {}


class _TemplateBuild(threading.Thread):
    """Label Studio's migrated DB template (``LabelStudioServer._ensure_db_template``), built in
    the background from the end of collection: on a fresh clone it is ~50 s of one core (CPU-bound
    Django migrations; no faster on tmpfs), and the tests collected before tests/e2e (tests/backend,
    tests/cvat) leave the second core idle much of the time. Niced, so that they keep priority. The
    ``label_studio`` fixture waits for it (``join``) before it starts the server, which then copies
    the template as before; an error is the fixture's to report (it builds the template itself)."""

    def __init__(self) -> None:
        super().__init__(name="ls-db-template", daemon=True)
        self.seconds = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        server = LabelStudioServer()  # only for its env and paths: never started
        try:
            self.seconds = server._ensure_db_template(niceness=10)
        except Exception as exc:  # the fixture's own build attempt reports it (it builds when none exists)
            self.error = exc
        finally:
            server.stop()  # removes its temporary work dir


_template_build: _TemplateBuild | None = None


def pytest_collection_finish(session):
    global _template_build
    here = Path(__file__).resolve().parent
    wants_ls = any(here in Path(str(item.fspath)).resolve().parents for item in session.items)
    installed = (DEFAULT_VENV / "bin" / "label-studio").exists()  # else the fixture installs it first
    if wants_ls and installed and not DEFAULT_DB_TEMPLATE.exists() and not session.config.option.collectonly:
        _template_build = _TemplateBuild()
        _template_build.start()


@pytest.fixture(scope="package")
def label_studio():
    log_path = Path(os.environ.get("CAMCUT_LS_LOG", _REPO_ROOT / "out" / "e2e" / "label-studio.log"))
    log_path.parent.mkdir(parents=True, exist_ok=True)

    try:
        _TIMINGS["install_s"] = round(ensure_installed(timeout=float(os.environ.get("CAMCUT_LS_INSTALL_TIMEOUT", 900))), 2)
    except (LabelStudioError, OSError) as exc:
        pytest.fail(f"Label Studio {LS_VERSION} could not be installed into .venv-ls: {exc}", pytrace=False)

    if _template_build is not None:  # the background build (above): wait for it, never build twice
        t0 = time.monotonic()
        _template_build.join()
        _TIMINGS["db_template_background_s"] = round(_template_build.seconds, 2)
        _TIMINGS["db_template_wait_s"] = round(time.monotonic() - t0, 2)
        if _template_build.error is not None:
            _TIMINGS["db_template_background_error"] = repr(_template_build.error)
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
            "of it in the background %.1fs (waited for %.1fs), startup %.1fs, stop %.1fs"
            % (
                LS_VERSION,
                _TIMINGS.get("install_s", 0),
                _TIMINGS.get("db_template_s", 0),
                _TIMINGS.get("db_template_background_s", 0),
                _TIMINGS.get("db_template_wait_s", 0),
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
