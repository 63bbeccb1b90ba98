"""Run a real Label Studio (pinned, from ``<repo>/.venv-ls``) for end-to-end tests.

Importable without pytest::

    from tests.e2e.label_studio import LabelStudioServer, ensure_installed

    ensure_installed()                      # scripts/install_label_studio.sh (idempotent)
    with LabelStudioServer() as ls:         # headless, loopback, SQLite in a temp dir
        project = ls.create_project("demo", LABEL_CONFIG)
        task_ids = ls.upload_files(project["id"], ["/path/a.jpg"])
        ...

Everything the server writes (SQLite DB, media uploads, log) lives in a temporary
directory that is removed on ``stop()`` unless ``keep_workdir=True``.

Behaviour of Label Studio 1.23.2 that this helper relies on (see
docs/label_studio_ml_protocol.md for source references):

* ``label-studio start --username/--password/--user-token`` creates the admin user
  non-interactively and sets its legacy API token to ``--user-token``.
* Legacy ``Authorization: Token <key>`` auth only works if the organization has
  ``legacy_api_tokens_enabled``; new organizations have it OFF unless
  ``--enable-legacy-api-token`` / ``LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true``.
  It matters beyond this helper: LS sends exactly that legacy key to ML backends as
  ``access_token`` in ``/setup``.
* ``LABEL_STUDIO_HOST`` is what LS sends as ``hostname`` in ``/setup``; without it LS
  sends ``http://localhost:<port>``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]
LS_VERSION = "1.23.2"
DEFAULT_VENV = REPO_ROOT / ".venv-ls"
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "install_label_studio.sh"
# A migrated, user-less SQLite DB kept next to the install (gitignored): copying it cuts
# startup from ~30 s (running ~400 migrations) to a few seconds. Tied to the LS version.
DEFAULT_DB_TEMPLATE = DEFAULT_VENV / f"camcut-db-template-{LS_VERSION}.sqlite3"

_DEV_SERVER_RE = re.compile(r"Starting development server at (https?://[^\s/]+)/")


class LabelStudioError(RuntimeError):
    """Label Studio could not be installed/started, or an API call failed."""


# --------------------------------------------------------------------------- install


def installed_version(venv: Path = DEFAULT_VENV) -> str | None:
    """Version of ``label-studio`` installed in ``venv``, or None."""
    python = Path(venv) / "bin" / "python"
    if not python.exists():
        return None
    proc = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('label-studio'))"],
        capture_output=True,
        text=True,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def ensure_installed(venv: Path = DEFAULT_VENV, version: str = LS_VERSION, timeout: float = 900.0) -> float:
    """Install Label Studio into ``venv`` via scripts/install_label_studio.sh if needed.

    Returns the seconds spent (≈0 when already installed). Raises LabelStudioError.
    """
    start = time.monotonic()
    if installed_version(venv) == version and (Path(venv) / "bin" / "label-studio").exists():
        return time.monotonic() - start
    env = dict(os.environ, LS_VERSION=version, LS_VENV=str(venv))
    try:
        proc = subprocess.run(["bash", str(INSTALL_SCRIPT)], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise LabelStudioError(f"installing label-studio=={version} timed out after {timeout:.0f}s") from exc
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise LabelStudioError(f"{INSTALL_SCRIPT} failed (exit {proc.returncode}) installing label-studio=={version}:\n{tail}")
    if installed_version(venv) != version:
        raise LabelStudioError(f"after install, {venv} does not contain label-studio=={version}")
    return time.monotonic() - start


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- server


class LabelStudioServer:
    """A headless Label Studio process plus thin ``requests`` helpers for its API."""

    def __init__(
        self,
        venv: Path = DEFAULT_VENV,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        workdir: Path | None = None,
        document_root: Path | None = None,
        username: str = "admin@camcut.test",
        password: str | None = None,
        token: str | None = None,
        log_path: Path | None = None,
        startup_timeout: float = 240.0,
        keep_workdir: bool = False,
        extra_env: Mapping[str, str] | None = None,
        db_template: Path | None = DEFAULT_DB_TEMPLATE,
    ) -> None:
        self.venv = Path(venv)
        self.host = host
        self.port = port or free_port(host)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="camcut-ls-"))
        self.data_dir = self.workdir / "data"
        self.document_root = Path(document_root) if document_root else self.workdir / "local-files"
        self.username = username
        self.password = password or secrets.token_hex(12)
        # legacy token: LS replaces the user's auto-generated key with this (must be > 5 chars)
        self.token = token or secrets.token_hex(20)
        self.log_path = Path(log_path) if log_path else self.workdir / "label-studio.log"
        self.startup_timeout = startup_timeout
        self.keep_workdir = keep_workdir
        self.extra_env = dict(extra_env or {})
        self.db_template = Path(db_template) if db_template else None
        self.db_path = self.data_dir / "label_studio.sqlite3"
        self.template_seconds = 0.0
        self.url = f"http://{host}:{self.port}"
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen | None = None
        self._log_file = None
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {self.token}"

    # ----------------------------------------------------------------- lifecycle

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LABEL_STUDIO_", "HEARTEX_", "DJANGO_")) and k not in ("VIRTUAL_ENV", "PYTHONPATH")
        }
        env.update(
            {
                "PATH": f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
                "VIRTUAL_ENV": str(self.venv),
                "PYTHONUNBUFFERED": "1",
                "HOME": str(self.workdir / "home"),
                "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
                "DJANGO_DB": "sqlite",
                "DATABASE_NAME": str(self.db_path),
                # hostname that LS reports to ML backends in /setup and uses for URLs
                "LABEL_STUDIO_HOST": self.url,
                # allow ML backends on loopback / private addresses
                "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
                "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
                # /data/local-files/?d=... serving
                "LOCAL_FILES_SERVING_ENABLED": "true",
                "LOCAL_FILES_DOCUMENT_ROOT": str(self.document_root),
                # the legacy token (the one LS hands to ML backends in /setup) must be usable
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
                # no phoning home from a test machine
                "SENTRY_DSN": "",
                "FRONTEND_SENTRY_DSN": "",
                "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
                "LATEST_VERSION_CHECK": "false",
            }
        )
        env.update(self.extra_env)
        return env

    def command(self) -> list[str]:
        return [
            str(self.venv / "bin" / "label-studio"),
            "start",
            "--no-browser",
            "--internal-host",
            self.host,
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--database",
            str(self.db_path),
            "--username",
            self.username,
            "--password",
            self.password,
            "--user-token",
            self.token,
            "--enable-legacy-api-token",
        ]

    def start(self) -> LabelStudioServer:
        """Start and wait until ``/health`` is UP and the token works (raises LabelStudioError).

        On failure the process group is killed and the temp work dir removed; the error
        message carries the tail of the server log."""
        if self._proc is not None:
            raise LabelStudioError("already started")
        try:
            exe = self.venv / "bin" / "label-studio"
            if not exe.exists():
                raise LabelStudioError(f"{exe} not found: run scripts/install_label_studio.sh")
            for d in (self.data_dir, self.document_root, self.workdir / "home", self.log_path.parent):
                d.mkdir(parents=True, exist_ok=True)
            if self.db_template is not None and not self.db_path.exists():
                self.template_seconds = self._ensure_db_template()
                shutil.copyfile(self.db_template, self.db_path)
            t0 = time.monotonic()
            self._log_file = open(self.log_path, "wb", buffering=0)  # noqa: SIM115  # the server's log, closed on stop
            self._proc = subprocess.Popen(
                self.command(),
                cwd=str(self.workdir),
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group -> clean killpg on stop()
            )
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _ensure_db_template(self, timeout: float = 600.0, niceness: int = 0) -> float:
        """Build ``db_template`` once (``label-studio version`` migrates an empty DB and exits);
        ``niceness`` > 0 runs the build at that much lower CPU priority (a background build)."""
        t0 = time.monotonic()
        if self.db_template.exists():
            return 0.0
        build = Path(tempfile.mkdtemp(prefix="camcut-ls-template-"))
        try:
            env = self.env()
            db = build / "data" / "template.sqlite3"
            env.update(
                LABEL_STUDIO_BASE_DATA_DIR=str(build / "data"),
                DATABASE_NAME=str(db),
                HOME=str(build / "home"),
            )
            (build / "home").mkdir(parents=True)
            cmd = [
                str(self.venv / "bin" / "label-studio"),
                "version",
                "--data-dir",
                str(build / "data"),
                "--database",
                str(db),
            ]
            if niceness > 0:  # coreutils nice(1): no preexec_fn, which is unsafe in a process with threads
                cmd = ["nice", "-n", str(niceness), *cmd]
            try:
                proc = subprocess.run(
                    cmd,
                    env=env,
                    cwd=str(build),
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    stdin=subprocess.DEVNULL,
                )
            except subprocess.TimeoutExpired as exc:
                raise LabelStudioError(f"building the DB template timed out after {timeout:.0f}s") from exc
            if proc.returncode != 0 or not db.exists():
                raise LabelStudioError(
                    f"building the DB template failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}"
                )
            tmp = self.db_template.with_name(f".{self.db_template.name}.{os.getpid()}.tmp")
            shutil.copyfile(db, tmp)
            os.replace(tmp, self.db_template)  # atomic: concurrent builders just race harmlessly
        finally:
            shutil.rmtree(build, ignore_errors=True)
        return time.monotonic() - t0

    def _wait_ready(self, t0: float) -> None:
        deadline = t0 + self.startup_timeout
        last_err: Any = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise LabelStudioError(
                    f"label-studio exited with code {self._proc.returncode} during startup; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            self._adopt_logged_url()
            try:
                r = requests.get(f"{self.url}/health", timeout=2)
                if r.status_code == 200 and r.json().get("status") == "UP":
                    break
                last_err = f"HTTP {r.status_code}: {r.text[:200]}"
            except (requests.RequestException, ValueError) as exc:
                last_err = exc
            time.sleep(0.5)  # poll interval of the deadline-bounded readiness check
        else:
            raise LabelStudioError(
                f"label-studio not ready at {self.url} after {self.startup_timeout:.0f}s ({last_err}); "
                f"log {self.log_path}:\n{self.log_tail()}"
            )
        # the API token must work too (user creation happens before the server listens)
        r = self.session.get(f"{self.url}/api/current-user/whoami", timeout=10)
        if r.status_code != 200:
            raise LabelStudioError(
                f"label-studio is up but token auth fails: HTTP {r.status_code} {r.text[:300]}\n{self.log_tail()}"
            )

    def _adopt_logged_url(self) -> None:
        # `label-studio start` silently moves to the next port if ours got taken meanwhile
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return
        m = _DEV_SERVER_RE.search(text)
        if m:
            url = m.group(1).replace("0.0.0.0", self.host)
            if url != self.url:
                self.url = url
                self.port = int(url.rsplit(":", 1)[1])

    def log_tail(self, n_chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return "<no log>"

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        # SIGINT (runserver's Ctrl-C) first, then SIGTERM, then SIGKILL. The server and its SQLite DB
        # are throw-away: nothing is read after a stop, so the grace is short. A SIGINT ends it in
        # ~1 s when idle (two runs here, one with a keep-alive connection open), but after the e2e
        # tests it often ignores it: CI run 7b and the before run of test_learning_e2e waited out the
        # whole 15 s SIGINT grace of before (stop 15.1 / 15.2 s), then SIGTERM ended it at once.
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            try:
                pgid = os.getpgid(proc.pid)
            except ProcessLookupError:
                pgid = None
            for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                try:
                    if pgid is not None:
                        os.killpg(pgid, sig)
                    else:
                        proc.send_signal(sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            # reap stragglers of the group (e.g. runserver children)
            if pgid is not None:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.session.close()
        if self._own_workdir and not self.keep_workdir:
            # keep the log if it was placed outside the work dir
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LabelStudioServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----------------------------------------------------------------- raw API

    def request(self, method: str, path: str, *, expect: Iterable[int] = (200, 201, 204), **kwargs) -> Any:
        """Call ``{url}{path}`` with the legacy token; return parsed JSON (or None)."""
        kwargs.setdefault("timeout", 120)
        url = path if path.startswith("http") else f"{self.url}{path}"
        r = self.session.request(method, url, **kwargs)
        if r.status_code not in tuple(expect):
            raise LabelStudioError(f"{method} {path} -> HTTP {r.status_code}: {r.text[:2000]}")
        if not r.content:
            return None
        try:
            return r.json()
        except ValueError:
            return r.content

    def get(self, path: str, **kw) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> Any:
        return self.request("POST", path, **kw)

    def patch(self, path: str, **kw) -> Any:
        return self.request("PATCH", path, **kw)

    def delete(self, path: str, **kw) -> Any:
        return self.request("DELETE", path, **kw)

    # ----------------------------------------------------------------- auth

    def whoami(self) -> dict[str, Any]:
        return self.get("/api/current-user/whoami")

    def create_personal_access_token(self) -> str:
        """Create a PAT (a long-lived JWT *refresh* token) for the admin user.

        LS allows one live PAT per user (POST again -> 409 until it is blacklisted).
        """
        return self.post("/api/token/")["token"]

    def access_token_from_pat(self, pat: str) -> str:
        """Exchange a PAT (refresh JWT) for a short-lived access JWT (``Authorization: Bearer``)."""
        r = requests.post(f"{self.url}/api/token/refresh/", json={"refresh": pat}, timeout=30)
        if r.status_code != 200:
            raise LabelStudioError(f"POST /api/token/refresh/ -> HTTP {r.status_code}: {r.text[:500]}")
        return r.json()["access"]

    # ----------------------------------------------------------------- projects & tasks

    def create_project(self, title: str, label_config: str, **fields: Any) -> dict[str, Any]:
        return self.post("/api/projects/", json={"title": title, "label_config": label_config, **fields})

    def get_project(self, project_id: int) -> dict[str, Any]:
        return self.get(f"/api/projects/{project_id}/")

    def update_project(self, project_id: int, **fields: Any) -> dict[str, Any]:
        return self.patch(f"/api/projects/{project_id}/", json=fields)

    def upload_files(self, project_id: int, paths: Sequence[os.PathLike]) -> list[int]:
        """Multipart import: one task per image, ``data.image = /data/upload/<project>/<uuid>-<name>``.

        Returns the created task ids (in upload order).
        """
        files = []
        handles = []
        try:
            for i, p in enumerate(paths):
                fh = open(p, "rb")  # noqa: SIM115  # handed to the upload, closed after it
                handles.append(fh)
                # LS iterates request.FILES.items(): one file per *distinct* form field name
                files.append((f"file{i}", (Path(p).name, fh, _mime(p))))
            res = self.post(f"/api/projects/{project_id}/import", params={"return_task_ids": "true"}, files=files)
        finally:
            for fh in handles:
                fh.close()
        return list(res.get("task_ids") or [])

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        """JSON import; tasks may carry ``predictions`` / ``annotations``. Response has ``task_ids``."""
        return self.post(f"/api/projects/{project_id}/import", params={"return_task_ids": "true"}, json=tasks)

    def import_predictions(self, project_id: int, predictions: list[dict[str, Any]]) -> dict[str, Any]:
        """Bulk-add predictions ``[{task, result, score?, model_version?}]`` to existing tasks."""
        return self.post(f"/api/projects/{project_id}/import/predictions", json=predictions)

    def create_prediction(
        self, task_id: int, result: list[dict[str, Any]], score: float | None = None, model_version: str = ""
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"task": task_id, "result": result, "model_version": model_version}
        if score is not None:
            body["score"] = score
        return self.post("/api/predictions/", json=body)

    def list_tasks(self, project_id: int, page_size: int = 100, resolve_uri: bool = False) -> list[dict[str, Any]]:
        """All tasks of a project with their predictions/annotations (``fields=all``).

        ``resolve_uri=False`` returns ``data`` as stored (what /predict receives); the
        Data Manager default (True) rewrites e.g. local-files URLs to absolute ones."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            res = self.get(
                "/api/tasks/",
                params={
                    "project": project_id,
                    "page": page,
                    "page_size": page_size,
                    "fields": "all",
                    "resolve_uri": str(resolve_uri).lower(),
                },
                expect=(200, 404),
            )
            if not isinstance(res, dict) or not res.get("tasks"):
                break
            out.extend(res["tasks"])
            if len(out) >= res.get("total", len(out)):
                break
            page += 1
        return out

    def get_task(self, task_id: int) -> dict[str, Any]:
        """NB: GET /api/tasks/<id>/ itself triggers ML prediction if the task has none and
        the project has an ML backend (``show_collab_predictions`` defaults to True)."""
        return self.get(f"/api/tasks/{task_id}/")

    def list_predictions(self, task_id: int) -> list[dict[str, Any]]:
        return self.get("/api/predictions/", params={"task": task_id})

    def list_annotations(self, task_id: int) -> list[dict[str, Any]]:
        return self.get(f"/api/tasks/{task_id}/annotations/")

    def create_annotation(self, task_id: int, result: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        return self.post(f"/api/tasks/{task_id}/annotations/", json={"result": result, **fields})

    def fetch_data(self, url_or_path: str, headers: Mapping[str, str] | None = None) -> bytes:
        """Download task media (``/data/upload/...``, ``/data/local-files/?d=...``) as a backend would."""
        url = url_or_path if url_or_path.startswith("http") else f"{self.url}{url_or_path}"
        h = dict(self.session.headers) if headers is None else dict(headers)
        r = requests.get(url, headers=h, timeout=60)
        if r.status_code != 200:
            raise LabelStudioError(f"GET {url_or_path} -> HTTP {r.status_code}: {r.text[:300]}")
        return r.content

    # ----------------------------------------------------------------- local files storage

    def add_local_storage(
        self, project_id: int, path: os.PathLike, *, regex_filter: str = r".*\.(jpe?g|png)$", sync: bool = True
    ) -> dict[str, Any]:
        """Local Files import storage for ``path`` (must be inside ``document_root``).

        /data/local-files/?d=<path relative to document_root> is only served for files under a
        storage's path. With ``sync`` each matching file becomes a task
        ``{"image": "/data/local-files/?d=<rel>"}``.
        """
        storage = self.post(
            "/api/storages/localfiles/",
            json={
                "project": project_id,
                "path": str(path),
                "regex_filter": regex_filter,
                "use_blob_urls": True,
                "title": Path(path).name,
            },
        )
        if sync:
            self.post(f"/api/storages/localfiles/{storage['id']}/sync")
        return storage

    def local_file_url(self, path: os.PathLike) -> str:
        rel = Path(path).resolve().relative_to(self.document_root.resolve())
        return f"/data/local-files/?d={rel.as_posix()}"

    # ----------------------------------------------------------------- ML backends

    def connect_ml_backend(
        self,
        project_id: int,
        url: str,
        *,
        title: str = "camcut",
        is_interactive: bool = True,
        extra_params: dict[str, Any] | None = None,
        basic_auth: tuple | None = None,
        timeout: float | None = None,
        use_for_predictions: bool = True,
    ) -> dict[str, Any]:
        """POST /api/ml. LS calls the backend's /health then /setup synchronously (the
        request fails with 400 if either fails). ``is_interactive`` enables
        /api/ml/<id>/interactive-annotating. With ``use_for_predictions`` the project's
        ``model_version`` is pointed at this backend's title so its predictions are shown."""
        body: dict[str, Any] = {"url": url, "project": project_id, "title": title, "is_interactive": is_interactive}
        if extra_params is not None:
            body["extra_params"] = extra_params
        if timeout is not None:
            body["timeout"] = timeout
        if basic_auth:
            body.update(auth_method="BASIC_AUTH", basic_auth_user=basic_auth[0], basic_auth_pass=basic_auth[1])
        ml = self.post("/api/ml/", json=body)
        if use_for_predictions:
            self.update_project(project_id, model_version=title, show_collab_predictions=True)
        return ml

    def list_ml_backends(self, project_id: int) -> list[dict[str, Any]]:
        """NB: listing re-runs /health + /setup on every backend (state refresh)."""
        return self.get("/api/ml/", params={"project": project_id})

    def get_ml_backend(self, ml_id: int) -> dict[str, Any]:
        return self.get(f"/api/ml/{ml_id}")

    def retrieve_predictions(self, project_id: int, task_ids: Sequence[int] | None = None) -> dict[str, Any]:
        """Data Manager action ``retrieve_tasks_predictions``: LS calls /setup then one batched
        /predict with the selected tasks (those without a prediction of the current model
        version), and stores the results as predictions. Synchronous."""
        selected = {"all": True, "excluded": []} if task_ids is None else {"all": False, "included": list(task_ids)}
        return self.post(
            "/api/dm/actions",
            params={"id": "retrieve_tasks_predictions", "project": project_id},
            json={"selectedItems": selected},
        )

    def predict_test(self, ml_id: int) -> dict[str, Any]:
        """POST /api/ml/<id>/predict/test?random=true: /predict on one random task, not stored."""
        return self.post(f"/api/ml/{ml_id}/predict/test", params={"random": "true"}, expect=(200, 500))

    def interactive_annotating(self, ml_id: int, task_id: int, context: dict[str, Any] | None) -> dict[str, Any]:
        """Returns ``{"data": <results[0] of the backend>}`` or ``{"errors": [...]}`` (both HTTP 200)."""
        return self.post(f"/api/ml/{ml_id}/interactive-annotating", json={"task": task_id, "context": context})

    def train(self, ml_id: int) -> Any:
        """POST /api/ml/<id>/train: LS posts ``{"action": "START_TRAINING", "project": {...}}`` to /webhook."""
        return self.post(f"/api/ml/{ml_id}/train", json={})

    def list_webhooks(self, project_id: int) -> list[dict[str, Any]]:
        return self.get("/api/webhooks/", params={"project": project_id})


# --------------------------------------------------------------------------- helpers


def _mime(path: os.PathLike) -> str:
    ext = Path(path).suffix.lower()
    return {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}.get(ext, "application/octet-stream")


def voc_objects(xml_path: os.PathLike) -> dict[str, Any]:
    """Parse a VOC annotation: ``{"width", "height", "objects": [{"name", "xmin", ...}]}`` (pixels)."""
    root = ET.parse(xml_path).getroot()
    size = root.find("size")
    objs = []
    for o in root.findall("object"):
        bb = o.find("bndbox")
        objs.append({"name": o.findtext("name"), **{k: float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")}})
    return {"width": int(size.findtext("width")), "height": int(size.findtext("height")), "objects": objs}


def voc_rectangles(
    xml_path: os.PathLike,
    *,
    labels: Iterable[str] | None = None,
    from_name: str = "box",
    to_name: str = "image",
) -> list[dict[str, Any]]:
    """VOC boxes -> Label Studio ``rectanglelabels`` results (percent coordinates).

    VOC pixel coords are 1-based inclusive; LS x/y/width/height are % of the original size.
    """
    ann = voc_objects(xml_path)
    w, h = ann["width"], ann["height"]
    keep = set(labels) if labels is not None else None
    out = []
    for i, o in enumerate(ann["objects"]):
        if keep is not None and o["name"] not in keep:
            continue
        x0, y0 = o["xmin"] - 1, o["ymin"] - 1
        out.append(
            {
                "id": f"voc{i}",
                "type": "rectanglelabels",
                "from_name": from_name,
                "to_name": to_name,
                "original_width": w,
                "original_height": h,
                "image_rotation": 0,
                "value": {
                    "x": 100.0 * x0 / w,
                    "y": 100.0 * y0 / h,
                    "width": 100.0 * (o["xmax"] - x0) / w,
                    "height": 100.0 * (o["ymax"] - y0) / h,
                    "rotation": 0,
                    "rectanglelabels": [o["name"]],
                },
            }
        )
    return out


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True, default=str)


# -- the demo project shared by the e2e tests and the screenshot script ---------------------
VOC_ROOT = Path(os.environ.get("CAMCUT_VOC_ROOT", Path(__file__).resolve().parents[3] / "shared" / "voc2012" / "VOC2012"))
DEMO_LABELS = ("dog", "cat", "person")
DEMO_LABEL_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <RectangleLabels name="box" toName="image"><Label value="dog"/><Label value="cat"/><Label value="person"/></RectangleLabels>
  <BrushLabels name="mask" toName="image"><Label value="dog"/><Label value="cat"/><Label value="person"/></BrushLabels>
  <Choices name="tags" toName="image" choice="multiple"><Choice value="dog"/><Choice value="cat"/><Choice value="person"/></Choices>
</View>"""


def create_voc_project(
    ls: LabelStudioServer,
    title: str,
    stems: list[str] | tuple[str, ...],
    voc: Path = VOC_ROOT,
    labels: tuple[str, ...] = DEMO_LABELS,
    label_config: str = DEMO_LABEL_CONFIG,
) -> tuple[dict, dict[str, int]]:
    """Create a project, upload the VOC images ``stems`` and import their VOC boxes as
    predictions (model_version "voc-boxes"). Returns (project, {stem: task id})."""
    proj = ls.create_project(title, label_config)
    task_ids = ls.upload_files(proj["id"], [voc / "JPEGImages" / f"{s}.jpg" for s in stems])
    tasks = {t["id"]: t for t in ls.list_tasks(proj["id"])}
    by_stem = {next(s for s in stems if tasks[tid]["data"]["image"].endswith(f"{s}.jpg")): tid for tid in task_ids}
    ls.import_predictions(
        proj["id"],
        [
            {
                "task": by_stem[s],
                "result": voc_rectangles(voc / "Annotations" / f"{s}.xml", labels=labels),
                "score": 1.0,
                "model_version": "voc-boxes",
            }
            for s in stems
        ],
    )
    return proj, by_stem


class CamcutBackend:
    """camcut's backend under gunicorn (the ``make run`` command) on a free loopback port,
    pointed at Label Studio ``ls``; used by the e2e tests and the screenshot script."""

    def __init__(self, ls: LabelStudioServer, log_path: Path, model_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CAMCUT_", "LABEL_STUDIO_", "BASIC_AUTH_"))},
            "PORT": str(self.port),
            "WORKERS": "1",
            "THREADS": "2",
            "LOG_LEVEL": "INFO",
            "LABEL_STUDIO_URL": ls.url,
            "LABEL_STUDIO_API_KEY": ls.token,
            "MODEL_DIR": str(model_dir),
        }
        self.proc: subprocess.Popen | None = None
        self._log: Any = None

    def start(self, timeout: float = 180.0) -> CamcutBackend:
        """Start gunicorn and wait for /health; RuntimeError (with the log tail) otherwise."""
        gunicorn = Path(sys.executable).parent / "gunicorn"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115  # the backend's log, closed on stop
        self.proc = subprocess.Popen(
            [str(gunicorn), "--config", "backend/gunicorn_conf.py", "backend.wsgi:app"],
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"backend exited with {self.proc.returncode}; log {self.log_path}:\n{self.tail()}")
            try:
                if requests.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"backend not healthy after {timeout:.0f}s; log {self.log_path}:\n{self.tail()}")
            time.sleep(0.5)  # poll interval of the deadline-bounded readiness check

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "<no log>"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
