"""A bulk run: list the project's tasks, skip the done ones, predict the rest (in worker
processes or inline), record each outcome in the state file, summarise."""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..labelstudio import LabelStudioAuthError, LabelStudioClient, LabelStudioError
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError
from .pace import RateLimit
from .state import StateFile
from .worker import Outcome, failed, init_worker, predict_and_post, work

if TYPE_CHECKING:  # heavy imports (torch) stay out of the module top level: workers set threads first
    from ..model import CamCutModel

log = logging.getLogger("backend.bulk")

MAX_POOL_RESTARTS = 3


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
    scheduler: str | None = None  # a Dask scheduler address: run on that cluster (backend/bulk/cluster.py)
    rate: float = 0.0  # tasks started per second at most (0: no cap)
    max_inflight: int | None = None  # cluster: tasks on the cluster at most (None: 4 x worker threads)
    ls_connections: int = 2  # cluster: posts to Label Studio at once
    cluster_timeout: float = 60.0  # cluster: seconds to reach the scheduler / to go without any worker


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
    scheduler: str | None = None
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
        where = f"{self.workers} worker(s)"
        if self.scheduler:
            where = f"{self.workers} worker thread(s) on the Dask cluster {self.scheduler}"
        lines += [
            f"  wall time       {self.wall_seconds:.1f} s ({self.predict_seconds:.1f} s predicting, {where})",
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
    def __init__(
        self,
        opts: Options,
        settings: Settings,
        model: CamCutModel | None = None,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        if opts.workers < 0 or opts.batch < 1 or opts.page_size < 1 or (opts.limit is not None and opts.limit < 0):
            raise UsageError("--workers must be >= 0, --batch and --page-size >= 1, --limit >= 0")
        if opts.rate < 0 or opts.ls_connections < 1 or (opts.max_inflight is not None and opts.max_inflight < 1):
            raise UsageError("--rate must be >= 0, --ls-connections and --max-inflight >= 1")
        if not settings.label_studio_url:
            raise UsageError("no Label Studio URL: pass --url or set LABEL_STUDIO_URL")
        if not settings.label_studio_api_key:
            raise UsageError("no API key: set LABEL_STUDIO_API_KEY (or pass --api-key)")
        self.opts = opts
        self.settings = settings
        self.model = model
        self.on_outcome = on_outcome
        self.api = LabelStudioClient(settings.label_studio_url, settings.label_studio_api_key, settings.download_timeout)
        self.summary = Summary(project=opts.project, workers=opts.workers, scheduler=opts.scheduler)
        self.limit = RateLimit(opts.rate)
        self.state: StateFile | None = None
        self.bar: Any = None

    # -- setup ---------------------------------------------------------------------------------
    def _prepare(self) -> tuple[str, list[dict[str, Any]]]:
        from ..model import CamCutModel
        from ..schema import SchemaError, parse_schema

        project = self._project()
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
        except LabelStudioError as exc:
            raise UsageError(f"cannot list the tasks of project {self.opts.project}: {exc}") from None
        return label_config, tasks

    def _project(self) -> dict[str, Any]:
        project, url = self.opts.project, self.api.url
        try:
            data = self.api.project(project)
        except LabelStudioError as exc:
            if exc.status == 404:
                raise UsageError(f"project {project} does not exist in Label Studio at {url} (HTTP 404)") from None
            if isinstance(exc, LabelStudioAuthError):
                raise UsageError(
                    f"Label Studio at {url} refused the API key (HTTP {exc.status}): check "
                    "LABEL_STUDIO_API_KEY / --api-key (a legacy token needs legacy tokens enabled, "
                    "else use a personal access token)"
                ) from None
            raise UsageError(str(exc)) from None
        if not isinstance(data, dict):
            raise UsageError(f"GET /api/projects/{project}/ did not return a project object")
        return data

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
    def _record(self, o: Outcome, hook: bool = True) -> None:
        rec = {**o.record(), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if o.fatal:  # not recorded: the task is tried again on the next run
            self.summary.failed += 1
            self.summary.failures.append((o.task, o.error or "?"))
            self._bar_update()
            raise _Abort(o.error or "fatal error")
        self.state.append(rec)  # type: ignore[union-attr]
        self.summary.task_seconds += float(o.seconds or 0.0)
        if o.done:
            self.summary.predicted += 1
            for w in o.warnings:
                log.info("task %s: %s", o.task, w)
        else:
            self.summary.failed += 1
            self.summary.failures.append((o.task, o.error or "?"))
            log.error("task %s failed: %s", o.task, o.error)
        self._bar_update()
        if hook and self.on_outcome is not None:
            self.on_outcome(o)

    def _bar_update(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix(done=self.summary.predicted, failed=self.summary.failed, refresh=False)
            self.bar.update(1)

    # -- execution -----------------------------------------------------------------------------
    def _run_inline(self, todo: list[dict[str, Any]], label_config: str) -> None:
        if self.model is None:  # _prepare made it; only the pool path runs without one here
            raise RuntimeError("BulkRun: no model to predict inline")
        for t in todo:
            self.limit.acquire()
            self._record(
                predict_and_post(
                    self.model,
                    self.api,
                    self.opts.project,
                    label_config,
                    t,
                    self.opts.overwrite,
                )
            )

    def _new_pool(self, label_config: str) -> ProcessPoolExecutor:
        settings = self.settings
        return ProcessPoolExecutor(
            max_workers=self.opts.workers,
            mp_context=mp.get_context("spawn"),
            initializer=init_worker,
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
        pending = deque(todo[i : i + k] for i in range(0, len(todo), k))
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
                    for _ in batch:
                        self.limit.acquire()
                    inflight[ex.submit(work, batch)] = batch
                done, _ = wait(list(inflight), return_when=FIRST_COMPLETED)
                broken = False
                for fut in done:
                    batch = inflight.pop(fut)
                    for o in self._outcomes(fut, batch):
                        broken |= o.worker_died
                        self._record(o)
                if broken:
                    for batch in list(inflight.values()):  # the whole pool is gone with it
                        for t in batch:
                            self._record(failed(t, "a worker process died while this task was in flight"))
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
            log.warning(
                "interrupted: finishing the %d job(s) in flight (Ctrl-C again to stop at once)",
                sum(1 for f in inflight if not f.cancelled()),
            )
            try:
                for fut, batch in list(inflight.items()):
                    if fut.cancelled():
                        continue
                    wait([fut])
                    for o in self._outcomes(fut, batch):
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
    def _outcomes(fut: Future, batch: list[dict[str, Any]]) -> list[Outcome]:
        try:
            return fut.result()
        except BrokenProcessPool:
            return [failed(t, "the worker process died while predicting this task", worker_died=True) for t in batch]
        except Exception as exc:
            return [failed(t, f"{type(exc).__name__}: {exc}") for t in batch]

    def run(self) -> Summary:
        t0 = time.monotonic()
        state_path = self.opts.state or (self.settings.model_dir / f"bulk-{self.opts.project}.jsonl")
        self.summary.state_path = str(state_path)
        try:
            label_config, tasks = self._prepare()
            self.state = StateFile(state_path, self.opts.project).open()
            self.summary.total = len(tasks)
            todo = self._select(tasks)
            log.info(
                "project %s: %d task(s), %d to predict, %d already done (model version %s)",
                self.opts.project,
                len(tasks),
                len(todo),
                self.summary.skipped,
                self.summary.model_version,
            )
            t1 = time.monotonic()
            try:
                if todo:
                    from tqdm import tqdm

                    self.bar = tqdm(
                        total=len(todo),
                        unit="task",
                        desc=f"project {self.opts.project}",
                        file=sys.stderr,
                        disable=not self.opts.progress,
                        dynamic_ncols=True,
                    )
                    try:
                        if self.opts.scheduler:
                            from .cluster import run_on_cluster  # imports distributed only for a cluster run

                            run_on_cluster(self, todo, label_config)
                        elif self.opts.workers == 0:
                            self._run_inline(todo, label_config)
                        else:
                            self._run_pool(todo, label_config)
                    except KeyboardInterrupt:
                        self.summary.interrupted = True
                    finally:
                        self.bar.close()
                        self.bar = None
            except _Abort as exc:
                self.summary.aborted = (
                    f"{exc} -- stopped; the tasks done so far are recorded, run the same command again to resume"
                )
            self.summary.predict_seconds = time.monotonic() - t1
            attempted = self.summary.predicted + self.summary.failed
            self.summary.not_attempted = max(0, self.summary.total - self.summary.skipped - attempted)
        finally:
            if self.state is not None:
                self.state.close()
            self.summary.wall_seconds = time.monotonic() - t0
        return self.summary
