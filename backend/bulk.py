"""Pre-annotate a whole Label Studio project with camcut, resumably.

Usage::

    python -m backend.bulk --project ID [--url URL] [--api-key KEY] [--workers N] [--batch K]
                           [--state FILE] [--overwrite] [--limit M] [--page-size P] [--no-progress]

``--url`` / ``--api-key`` default to ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY`` (prefer the
environment variable for the key: a command-line argument is visible in ``ps``). Every other
setting (``MODEL_DIR``, ``CAMCUT_*``) is read from the environment as for the backend
(``backend/config.py``).

What it does
------------
1. ``GET /api/projects/ID/`` -> the labelling config (must have ``<BrushLabels>`` on an ``<Image>``).
2. ``GET /api/tasks/?project=ID&page=P&page_size=S&fields=all&resolve_uri=false`` page by page
   (LS 1.23 answers ``{"tasks": [...], "total": N, ...}``, and 404 past the last page): every task
   with its data as stored and its annotations / predictions (the boxes and tags camcut reads).
3. Skips tasks already done (see *Resume*), then runs ``--workers`` processes (``spawn``; each
   loads the CNN once, torch/OpenCV 1 thread). Each task is predicted by
   :meth:`backend.model.CamCutModel.predict` and written back by the worker with
   ``POST /api/predictions/ {task, result, score, model_version}``. ``--batch K`` tasks are
   sent to a worker at a time (fewer round trips; results are still recorded per task).
   ``--workers 0`` predicts in this process (debugging).
4. A tqdm bar (stderr) shows tasks done / failed and the rate; each failed task is logged as
   ``task N failed: <reason>``. At the end a summary (stdout): tasks total / predicted / skipped /
   failed / not attempted, wall time and tasks/s.

Resume
------
The state file (default ``MODEL_DIR/bulk-<project>.jsonl``) gets one JSON line per finished task
(``{"project", "task", "status": "done"|"failed", "model_version", "prediction", ...}``), appended
with a single ``write`` on an ``O_APPEND`` descriptor and ``fsync``-ed, by the main process only,
after LS accepted the prediction. A run holds an exclusive ``flock`` on it (a second run on the
same project is refused). On restart, tasks recorded ``done`` with the current model version are
skipped; a torn last line (crash mid-write) is ignored. A task whose prediction reached LS but
whose line did not reach the file (killed in between) is skipped too, because tasks that already
have a non-empty prediction with the current model version in LS are skipped. Failed tasks are
retried on the next run. ``--overwrite`` ignores both, predicts every task again and deletes the
task's previous predictions of the same model version once the new one is stored.

A new model version (other engine config, weights, label map or adapted thresholds) predicts
everything again, as LS's own "Retrieve predictions" does.

Failures and exit codes
-----------------------
A task that cannot be predicted (missing image, bad box, no mask, LS refusing the prediction,
even a crashed worker) is counted, logged and recorded as ``failed``; the run goes on.
Exit code 0: every attempted task was predicted; 1: some tasks failed; 2: usage or configuration
error (no URL/key, LS unreachable, HTTP 401/403, unknown project, unusable labelling config,
state file in use), also if LS becomes unreachable or rejects the key during the run;
130: interrupted (Ctrl-C / SIGTERM: the tasks in flight are finished and recorded first, a second
Ctrl-C stops at once). The API key is never logged (log records are redacted).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import json
import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import requests

from .config import ConfigError, Settings
from .fetch import FetchError, LabelStudioClient, RedactingFilter, redact

if TYPE_CHECKING:  # heavy imports (torch) stay out of the module top level: workers set threads first
    from .model import CamCutModel

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("backend.bulk")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
MAX_POOL_RESTARTS = 3


class UsageError(Exception):
    """A usage / configuration problem: exit code 2 with this message."""


class ApiError(Exception):
    """A Label Studio API call failed; ``status`` is the HTTP status (None: not reachable)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def fatal(self) -> bool:
        """The run cannot go on (LS unreachable or the key refused), as opposed to one bad task."""
        return self.status is None or self.status in (401, 403)


# ------------------------------------------------------------------------------------ LS API
class LabelStudioApi:
    """JSON calls to LS with the key (legacy ``Token`` or PAT, via :class:`LabelStudioClient`)."""

    def __init__(self, url: str, api_key: str, timeout: float = 60.0, retries: int = 2) -> None:
        self.client = LabelStudioClient(url, api_key, timeout)
        self.url = self.client.url
        self.retries = retries
        self.secrets = (api_key,) if api_key else ()

    def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None,
                ok: Iterable[int] = (200, 201, 204)) -> Any:
        ok = tuple(ok)
        refreshed = False
        attempt = 0
        while True:
            try:
                headers = self.client.auth_headers(force_refresh=refreshed)
            except FetchError as exc:  # the PAT could not be exchanged for an access token
                status = None if "cannot refresh" in str(exc) else 401
                raise ApiError(redact(str(exc), self.secrets), status) from None
            try:
                r = self.client.session.request(method, f"{self.url}{path}", params=params, json=body, headers=headers,
                                                timeout=self.client.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                if attempt < self.retries:
                    attempt += 1
                    time.sleep(0.5 * attempt)
                    continue
                raise ApiError(f"cannot reach Label Studio at {self.url} ({method} {path}: {type(exc).__name__})") from None
            except requests.RequestException as exc:
                raise ApiError(f"{method} {path} on Label Studio failed: {type(exc).__name__}") from None
            if r.status_code == 401 and self.client.is_pat and not refreshed:
                refreshed = True
                continue
            if r.status_code in (502, 503, 504) and attempt < self.retries:
                attempt += 1
                time.sleep(0.5 * attempt)
                continue
            if r.status_code not in ok:
                detail = redact(r.text[:300].strip().replace("\n", " "), self.secrets)
                raise ApiError(f"{method} {path} on Label Studio: HTTP {r.status_code} {detail}".rstrip(), r.status_code)
            if not r.content:
                return None
            try:
                return r.json()
            except ValueError:
                raise ApiError(f"{method} {path} on Label Studio: the answer is not JSON", r.status_code) from None

    def project(self, project: int) -> dict[str, Any]:
        try:
            data = self.request("GET", f"/api/projects/{project}/")
        except ApiError as exc:
            if exc.status == 404:
                raise UsageError(f"project {project} does not exist in Label Studio at {self.url} (HTTP 404)") from None
            if exc.status in (401, 403):
                raise UsageError(f"Label Studio at {self.url} refused the API key (HTTP {exc.status}): check "
                                 "LABEL_STUDIO_API_KEY / --api-key (a legacy token needs legacy tokens enabled, "
                                 "else use a personal access token)") from None
            raise UsageError(str(exc)) from None
        if not isinstance(data, dict):
            raise UsageError(f"GET /api/projects/{project}/ did not return a project object")
        return data

    def tasks(self, project: int, page_size: int = 100) -> list[dict[str, Any]]:
        """All tasks of the project with annotations and predictions, data as stored."""
        out: dict[int, dict[str, Any]] = {}
        page = 1
        while True:
            res = self.request("GET", "/api/tasks/", ok=(200, 404), params={
                "project": project, "page": page, "page_size": page_size, "fields": "all", "resolve_uri": "false"})
            items = res.get("tasks") if isinstance(res, dict) else res if isinstance(res, list) else None
            if not items:
                break
            for t in items:
                if isinstance(t, dict) and isinstance(t.get("id"), int):
                    out.setdefault(t["id"], t)
            total = res.get("total") if isinstance(res, dict) else None
            if isinstance(res, list) or len(items) < page_size or (isinstance(total, int) and len(out) >= total):
                break
            page += 1
        return [out[k] for k in sorted(out)]

    def post_prediction(self, task: int, result: list[Any], score: float | None, model_version: str) -> dict[str, Any]:
        body = {"task": task, "result": result, "score": score, "model_version": model_version}
        res = self.request("POST", "/api/predictions/", body=body, ok=(200, 201))
        return res if isinstance(res, dict) else {}

    def delete_prediction(self, prediction: int) -> None:
        self.request("DELETE", f"/api/predictions/{prediction}/", ok=(200, 204, 404))


# ------------------------------------------------------------------------------------ state
class StateFile:
    """Append-only JSON lines, one per finished task; exclusive lock while a run holds it."""

    def __init__(self, path: Path, project: int) -> None:
        self.path = Path(path)
        self.project = project
        self.fd: int | None = None

    def open(self) -> "StateFile":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise UsageError(f"state file {self.path} is in use by another bulk run of this project") from None
                raise
        self.fd = fd
        size = os.fstat(fd).st_size
        if size:
            os.lseek(fd, size - 1, os.SEEK_SET)
            if os.read(fd, 1) != b"\n":  # torn last line: start the next record on a line of its own
                os.write(fd, b"\n")
                os.fsync(fd)
        if created:
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return self

    def records(self) -> list[dict[str, Any]]:
        out = []
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # torn or garbled line
            if isinstance(rec, dict) and rec.get("project") == self.project and isinstance(rec.get("task"), int):
                out.append(rec)
        return out

    def done(self, model_version: str) -> set[int]:
        """Tasks whose latest record is ``done`` with ``model_version``."""
        last: dict[int, dict[str, Any]] = {}
        for rec in self.records():
            last[rec["task"]] = rec
        return {t for t, r in last.items() if r.get("status") == "done" and r.get("model_version") == model_version}

    def append(self, record: Mapping[str, Any]) -> None:
        assert self.fd is not None, "state file not open"
        line = (json.dumps({"project": self.project, **record}, separators=(",", ":"), default=str) + "\n").encode()
        os.write(self.fd, line)  # one write on O_APPEND: never interleaved, at worst torn by a crash
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None


# ------------------------------------------------------------------------------------ one task
def predict_and_post(model: "CamCutModel", api: LabelStudioApi, project: int, label_config: str, task: Mapping[str, Any],
                     overwrite: bool = False) -> dict[str, Any]:
    """Predict one task and store the prediction in LS. Never raises: returns an outcome dict."""
    t0 = time.monotonic()
    tid = task.get("id")
    out: dict[str, Any] = {"task": tid, "status": "failed", "model_version": None, "prediction": None, "regions": 0,
                           "error": None, "warnings": [], "fatal": False}
    try:
        [pred] = model.predict([dict(task)], str(project), label_config, None)
        out["model_version"] = pred.get("model_version")
        out["warnings"] = list(pred.get("warnings") or [])
        result = pred.get("result") or []
        if pred.get("error") or not result:
            out["error"] = str(pred.get("error") or "no mask could be made for this task")
        else:
            created = api.post_prediction(int(tid), result, pred.get("score"), str(pred["model_version"]))
            out.update(status="done", prediction=created.get("id"), regions=len(result), mode=pred.get("mode"))
            if overwrite:
                for old in task.get("predictions") or []:
                    if (isinstance(old, dict) and old.get("model_version") == pred["model_version"]
                            and isinstance(old.get("id"), int) and old["id"] != created.get("id")):
                        api.delete_prediction(old["id"])
    except ApiError as exc:
        out["error"] = str(exc)
        out["fatal"] = exc.fatal
    except Exception as exc:  # one bad task never stops the run
        out["error"] = f"{type(exc).__name__}: {exc}"
    secrets = api.secrets + tuple(getattr(model, "secrets", ()) or ())
    out["error"] = redact(out["error"], secrets) if out["error"] else None
    out["seconds"] = round(time.monotonic() - t0, 3)
    return out


# ------------------------------------------------------------------------------------ workers
_WORKER: dict[str, Any] = {}


def _init_worker(settings: Settings, project: int, label_config: str, overwrite: bool, log_level: str) -> None:
    """Worker process start: 1 thread for torch/OpenCV, the CNN loaded once, Ctrl-C left to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    _configure_logging(settings, level=log_level)
    _WORKER.update(project=project, label_config=label_config, overwrite=overwrite, error=None)
    try:
        import cv2
        import torch

        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        from model import CamNet

        from .model import CamCutModel

        # The workers already fill the cores: one GrabCut at a time in each.
        one_thread = dataclasses.replace(settings, cut_threads=1)
        _WORKER["model"] = CamCutModel(one_thread, net=CamNet(settings.weights or None, num_threads=1))
        _WORKER["api"] = LabelStudioApi(settings.label_studio_url, settings.label_studio_api_key, settings.download_timeout)
    except Exception as exc:  # reported through every job, so the parent can stop cleanly
        _WORKER["error"] = redact(f"worker start failed: {type(exc).__name__}: {exc}",
                                  (settings.label_studio_api_key,) if settings.label_studio_api_key else ())


def _work(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if _WORKER.get("error"):
        return [{"task": t.get("id"), "status": "failed", "error": _WORKER["error"], "fatal": True, "warnings": [],
                 "model_version": None, "prediction": None, "regions": 0, "seconds": 0.0} for t in tasks]
    return [predict_and_post(_WORKER["model"], _WORKER["api"], _WORKER["project"], _WORKER["label_config"], t,
                             _WORKER["overwrite"]) for t in tasks]


# ------------------------------------------------------------------------------------ the run
@dataclass
class Options:
    project: int
    workers: int = 2
    batch: int = 1
    state: Path | None = None
    overwrite: bool = False
    limit: int | None = None
    page_size: int = 100
    progress: bool = True


@dataclass
class Summary:
    project: int
    model_version: str = ""
    total: int = 0
    predicted: int = 0
    skipped_state: int = 0
    skipped_ls: int = 0
    failed: int = 0
    not_attempted: int = 0
    workers: int = 0
    wall_seconds: float = 0.0
    predict_seconds: float = 0.0
    task_seconds: float = 0.0
    interrupted: bool = False
    aborted: str | None = None
    failures: list[tuple[Any, str]] = field(default_factory=list)
    state_path: str = ""

    @property
    def skipped(self) -> int:
        return self.skipped_state + self.skipped_ls

    @property
    def rate(self) -> float:
        n = self.predicted + self.failed
        return n / self.predict_seconds if self.predict_seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.aborted:
            return EXIT_USAGE
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failed else EXIT_OK

    def render(self) -> str:
        lines = [
            f"camcut bulk: project {self.project}, model version {self.model_version}",
            f"  tasks total     {self.total}",
            f"  predicted       {self.predicted}",
            f"  skipped         {self.skipped} (already done: {self.skipped_state} in the state file, "
            f"{self.skipped_ls} with a {self.model_version} prediction in Label Studio)",
            f"  failed          {self.failed}",
        ]
        if self.not_attempted:
            lines.append(f"  not attempted   {self.not_attempted}")
        per_task = f", {self.task_seconds / n:.2f} s per task in a worker" if (n := self.predicted + self.failed) else ""
        lines += [
            f"  wall time       {self.wall_seconds:.1f} s ({self.predict_seconds:.1f} s predicting, {self.workers} worker(s))",
            f"  rate            {self.rate:.2f} tasks/s (worker start-up included{per_task})",
            f"  state file      {self.state_path}",
        ]
        for tid, err in self.failures[:50]:
            lines.append(f"  failed task {tid}: {err}")
        if len(self.failures) > 50:
            lines.append(f"  ... and {len(self.failures) - 50} more failed tasks (see the state file)")
        if self.interrupted:
            lines.append("  INTERRUPTED: run the same command again to resume")
        if self.aborted:
            lines.append(f"  ABORTED: {self.aborted}")
        return "\n".join(lines)


def has_our_prediction(task: Mapping[str, Any], model_version: str) -> bool:
    for p in task.get("predictions") or []:
        if isinstance(p, dict) and p.get("model_version") == model_version:
            res = p.get("result")
            if isinstance(res, str):
                try:
                    res = json.loads(res)
                except ValueError:
                    res = None
            if isinstance(res, list) and res:
                return True
    return False


class _Abort(Exception):
    pass


class BulkRun:
    def __init__(self, opts: Options, settings: Settings, model: "CamCutModel | None" = None,
                 on_outcome: Callable[[dict[str, Any]], None] | None = None) -> None:
        if opts.workers < 0 or opts.batch < 1 or opts.page_size < 1 or (opts.limit is not None and opts.limit < 0):
            raise UsageError("--workers must be >= 0, --batch and --page-size >= 1, --limit >= 0")
        if not settings.label_studio_url:
            raise UsageError("no Label Studio URL: pass --url or set LABEL_STUDIO_URL")
        if not settings.label_studio_api_key:
            raise UsageError("no API key: set LABEL_STUDIO_API_KEY (or pass --api-key)")
        self.opts = opts
        self.settings = settings
        self.model = model
        self.on_outcome = on_outcome
        self.api = LabelStudioApi(settings.label_studio_url, settings.label_studio_api_key, settings.download_timeout)
        self.summary = Summary(project=opts.project, workers=opts.workers)
        self.state: StateFile | None = None
        self.bar: Any = None

    # -- setup ---------------------------------------------------------------------------------
    def _prepare(self) -> tuple[str, list[dict[str, Any]]]:
        from .model import CamCutModel, SchemaError, parse_schema

        project = self.api.project(self.opts.project)
        label_config = project.get("label_config") or ""
        try:
            parse_schema(label_config)
        except SchemaError as exc:
            raise UsageError(f"project {self.opts.project}: {exc}") from None
        if self.model is None:
            from model import CamNet

            try:
                self.model = CamCutModel(self.settings, net=CamNet(self.settings.weights or None))
            except (ValueError, OSError) as exc:
                raise UsageError(f"cannot load the camcut model: {exc}") from None
        self.summary.model_version = self.model.model_version(str(self.opts.project))
        try:
            tasks = self.api.tasks(self.opts.project, self.opts.page_size)
        except ApiError as exc:
            raise UsageError(f"cannot list the tasks of project {self.opts.project}: {exc}") from None
        return label_config, tasks

    def _select(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        version = self.summary.model_version
        done = set() if self.opts.overwrite else self.state.done(version)  # type: ignore[union-attr]
        todo = []
        for t in tasks:
            if t["id"] in done:
                self.summary.skipped_state += 1
            elif not self.opts.overwrite and has_our_prediction(t, version):
                self.summary.skipped_ls += 1
            else:
                todo.append(t)
        if self.opts.limit is not None and len(todo) > self.opts.limit:
            todo = todo[: self.opts.limit]
        return todo

    # -- recording -----------------------------------------------------------------------------
    def _record(self, o: dict[str, Any], hook: bool = True) -> None:
        rec = {k: o.get(k) for k in ("task", "status", "model_version", "prediction", "regions", "error", "seconds")}
        rec["at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        if o.get("fatal"):
            self.summary.failed += 1
            self.summary.failures.append((o.get("task"), o.get("error") or "?"))
            self._bar_update()
            raise _Abort(o.get("error") or "fatal error")
        self.state.append(rec)  # type: ignore[union-attr]
        self.summary.task_seconds += float(o.get("seconds") or 0.0)
        if o["status"] == "done":
            self.summary.predicted += 1
            for w in o.get("warnings") or []:
                log.info("task %s: %s", o.get("task"), w)
        else:
            self.summary.failed += 1
            self.summary.failures.append((o.get("task"), o.get("error") or "?"))
            log.error("task %s failed: %s", o.get("task"), o.get("error"))
        self._bar_update()
        if hook and self.on_outcome is not None:
            self.on_outcome(o)

    def _bar_update(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix(done=self.summary.predicted, failed=self.summary.failed, refresh=False)
            self.bar.update(1)

    # -- execution -----------------------------------------------------------------------------
    def _run_inline(self, todo: list[dict[str, Any]], label_config: str) -> None:
        for t in todo:
            self._record(predict_and_post(self.model, self.api, self.opts.project, label_config, t,  # type: ignore[arg-type]
                                          self.opts.overwrite))

    def _new_pool(self, label_config: str) -> ProcessPoolExecutor:
        settings = self.settings
        return ProcessPoolExecutor(
            max_workers=self.opts.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
            # workers log errors only: per-task errors and warnings come back in the outcomes
            initargs=(settings, self.opts.project, label_config, self.opts.overwrite, "ERROR"),
        )

    @staticmethod
    def _kill_pool(ex: ProcessPoolExecutor) -> None:
        procs = list((getattr(ex, "_processes", None) or {}).values())
        ex.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(5)

    def _run_pool(self, todo: list[dict[str, Any]], label_config: str) -> None:
        k = self.opts.batch
        pending = deque(todo[i:i + k] for i in range(0, len(todo), k))
        inflight: dict[Future, list[dict[str, Any]]] = {}
        restarts = 0
        # the children must not start more threads than they are told to (set before they import torch)
        saved = {v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
        os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        try:
            ex = self._new_pool(label_config)
        finally:
            for v, old in saved.items():
                if old is None:
                    os.environ.pop(v, None)
                else:
                    os.environ[v] = old
        try:
            while pending or inflight:
                # one job per worker: nothing waits in a queue, so Ctrl-C only waits for running jobs
                while pending and len(inflight) < self.opts.workers:
                    batch = pending.popleft()
                    inflight[ex.submit(_work, batch)] = batch
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                broken = False
                for fut in done:
                    batch = inflight.pop(fut)
                    for o in self._outcomes(fut, batch):
                        broken |= bool(o.pop("_broken", False))
                        self._record(o)
                if broken:
                    for fut, batch in list(inflight.items()):  # the whole pool is gone with it
                        for t in batch:
                            self._record(_failed(t, "a worker process died while this task was in flight"))
                    inflight.clear()
                    self._kill_pool(ex)
                    restarts += 1
                    if restarts > MAX_POOL_RESTARTS:
                        raise _Abort(f"worker processes died {restarts} times; giving up")
                    log.warning("a worker process died; starting new workers (%d/%d)", restarts, MAX_POOL_RESTARTS)
                    ex = self._new_pool(label_config)
        except KeyboardInterrupt:
            self.summary.interrupted = True
            for fut in inflight:
                fut.cancel()
            log.warning("interrupted: finishing the %d job(s) in flight (Ctrl-C again to stop at once)",
                        sum(1 for f in inflight if not f.cancelled()))
            try:
                for fut, batch in list(inflight.items()):
                    if fut.cancelled():
                        continue
                    wait([fut])
                    for o in self._outcomes(fut, batch):
                        o.pop("_broken", None)
                        try:
                            self._record(o, hook=False)
                        except _Abort:
                            pass
                inflight.clear()
            except KeyboardInterrupt:
                pass
            self._kill_pool(ex)
            return
        except BaseException:
            self._kill_pool(ex)
            raise
        ex.shutdown(wait=True)

    @staticmethod
    def _outcomes(fut: Future, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            return fut.result()
        except BrokenProcessPool:
            return [{**_failed(t, "the worker process died while predicting this task"), "_broken": True} for t in batch]
        except Exception as exc:
            return [_failed(t, f"{type(exc).__name__}: {exc}") for t in batch]

    def run(self) -> Summary:
        t0 = time.monotonic()
        state_path = self.opts.state or (self.settings.model_dir / f"bulk-{self.opts.project}.jsonl")
        self.summary.state_path = str(state_path)
        try:
            label_config, tasks = self._prepare()
            self.state = StateFile(state_path, self.opts.project).open()
            self.summary.total = len(tasks)
            todo = self._select(tasks)
            log.info("project %s: %d task(s), %d to predict, %d already done (model version %s)", self.opts.project,
                     len(tasks), len(todo), self.summary.skipped, self.summary.model_version)
            t1 = time.monotonic()
            try:
                if todo:
                    from tqdm import tqdm

                    self.bar = tqdm(total=len(todo), unit="task", desc=f"project {self.opts.project}", file=sys.stderr,
                                    disable=not self.opts.progress, dynamic_ncols=True)
                    try:
                        if self.opts.workers == 0:
                            self._run_inline(todo, label_config)
                        else:
                            self._run_pool(todo, label_config)
                    except KeyboardInterrupt:
                        self.summary.interrupted = True
                    finally:
                        self.bar.close()
                        self.bar = None
            except _Abort as exc:
                self.summary.aborted = (f"{exc} -- stopped; the tasks done so far are recorded, run the same command "
                                        "again to resume")
            self.summary.predict_seconds = time.monotonic() - t1
            attempted = self.summary.predicted + self.summary.failed
            self.summary.not_attempted = max(0, self.summary.total - self.summary.skipped - attempted)
        finally:
            if self.state is not None:
                self.state.close()
            self.summary.wall_seconds = time.monotonic() - t0
        return self.summary


def _failed(task: Mapping[str, Any], error: str) -> dict[str, Any]:
    return {"task": task.get("id"), "status": "failed", "error": error, "fatal": False, "warnings": [],
            "model_version": None, "prediction": None, "regions": 0, "seconds": 0.0}


# ------------------------------------------------------------------------------------ CLI
class _TqdmHandler(logging.Handler):
    """Log lines printed through tqdm (so they do not break the progress bar) on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover
            self.handleError(record)


def _configure_logging(settings: Settings, level: str | None = None) -> None:
    secrets = tuple(s for s in (settings.label_studio_api_key, settings.basic_auth_pass) if s)
    flt = RedactingFilter(secrets)
    for name in ("backend", "backend.bulk", "backend.model", "backend.fetch", "urllib3"):
        lg = logging.getLogger(name)
        lg.filters = [f for f in lg.filters if not isinstance(f, RedactingFilter)] + [flt]
    lg = logging.getLogger("backend")
    lg.handlers = [h for h in lg.handlers if not isinstance(h, _TqdmHandler)]
    h = _TqdmHandler()
    h.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    h.addFilter(flt)
    lg.addHandler(h)
    lg.setLevel(level or settings.log_level)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m backend.bulk", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", type=int, required=True, help="Label Studio project id")
    p.add_argument("--url", default=None, help="Label Studio URL (default: $LABEL_STUDIO_URL)")
    p.add_argument("--api-key", default=None, help="API key, legacy token or PAT (default: $LABEL_STUDIO_API_KEY; prefer the env var)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="worker processes (0: in this process)")
    p.add_argument("--batch", type=int, default=1, help="tasks handed to a worker at a time (default 1)")
    p.add_argument("--state", type=Path, default=None, help="state file (default: $MODEL_DIR/bulk-<project>.jsonl)")
    p.add_argument("--overwrite", action="store_true", help="predict every task again, replacing predictions of the same model version")
    p.add_argument("--limit", type=int, default=None, help="predict at most this many tasks in this run")
    p.add_argument("--page-size", type=int, default=100, help="tasks per page when listing (default 100)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="log per-task warnings (INFO)")
    return p


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None,
         on_outcome: Callable[[dict[str, Any]], None] | None = None, model: "CamCutModel | None" = None) -> int:
    args = build_parser().parse_args(argv)
    env = os.environ if env is None else env
    try:
        settings = Settings.from_env(env)
    except ConfigError as exc:
        print(f"camcut bulk: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    settings = dataclasses.replace(
        settings,
        label_studio_url=(args.url if args.url is not None else settings.label_studio_url).strip().rstrip("/"),
        label_studio_api_key=(args.api_key if args.api_key is not None else settings.label_studio_api_key).strip(),
    )
    _configure_logging(settings, level="INFO" if args.verbose else "WARNING")
    opts = Options(project=args.project, workers=args.workers, batch=args.batch, state=args.state, overwrite=args.overwrite,
                   limit=args.limit, page_size=args.page_size, progress=not args.no_progress)
    secrets = (settings.label_studio_api_key,) if settings.label_studio_api_key else ()
    try:
        run = BulkRun(opts, settings, model=model, on_outcome=on_outcome)
        summary = run.run()
    except UsageError as exc:
        print(f"camcut bulk: error: {redact(str(exc), secrets)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("camcut bulk: interrupted before any task was predicted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(redact(summary.render(), secrets), flush=True)
    return summary.exit_code


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _sigterm)
    sys.exit(main())
