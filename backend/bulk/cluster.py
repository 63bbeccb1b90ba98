"""A bulk run on a Dask distributed cluster (``--scheduler tcp://host:8786``).

Who does what
-------------
* The **workers** (``dask worker tcp://host:8786`` on each machine) only predict: a worker
  plugin (:class:`CamcutPlugin`) carries this run's settings and loads the CNN once per worker
  process, on its first task; each task is :func:`backend.bulk.worker.predict_only`, which
  downloads the image from Label Studio and returns the brush results.
* The **client** (this process) alone writes to Label Studio: it posts each prediction, then
  appends the task's line to the state file (fsynced), exactly as the local runner's parent
  records outcomes. A Dask task may run more than once (the scheduler reruns the tasks of a
  worker that died, and a worker can die after finishing a task but before the scheduler heard
  of it); since a run of the task only computes, a rerun never writes a second prediction. The
  one write is the client's, and a client killed between its ``POST`` and its state line is
  covered on the next run by the prediction already in LS with the current model version
  (``has_our_prediction``), as for the local runner.
* **Back-pressure**: at most ``max_inflight`` tasks are on the cluster (submitted, not yet
  predicted; default four per worker thread: the scheduler hands a worker its next task the
  moment it reports one done, instead of after a round trip through the client); at most ``ls_connections``
  posts at once, and no new task is submitted while that many predictions wait to be posted:
  when LS is the slow part, the cluster waits for it instead of piling up results. ``rate``
  caps the tasks started per second (each costs LS one image download and one post).
* **Failures**: a worker that dies is the scheduler's business: it reruns that worker's tasks
  elsewhere. A task that has killed ``distributed.scheduler.allowed-failures`` (3) workers
  comes back as ``KilledWorker`` and is recorded failed; the run goes on. A worker that cannot
  load the model, a worker serving another model version, the scheduler lost, or no worker for
  ``cluster_timeout`` seconds stop the run (recorded so far; a rerun resumes).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from distributed import Client, get_worker
from distributed.diagnostics.plugin import WorkerPlugin

from ..config import Settings
from ..redaction import redact
from .errors import UsageError
from .logs import configure_logging
from .pace import RateLimit
from .worker import Outcome, failed, post_prediction, predict_only

if TYPE_CHECKING:
    from ..model import CamCutModel
    from .run import BulkRun

log = logging.getLogger("backend.bulk")

NTHREADS_REFRESH_S = 2.0  # how often the client asks the scheduler how many worker threads there are


class CamcutPlugin(WorkerPlugin):
    """Per worker process: this run's settings and the model, loaded once on the first task (in
    the task's thread, not in the worker's event loop, which must keep answering heartbeats)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._model: CamCutModel | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["settings"])  # type: ignore[misc]

    def setup(self, worker: Any) -> None:
        configure_logging(self.settings, level="ERROR")  # the worker's log is redacted too

    def model(self) -> CamCutModel:
        with self._lock:
            if self._model is None:
                import cv2
                import torch

                from model import CamNet

                from ..model import CamCutModel

                # one thread each: a worker runs --nthreads tasks at once, like the local pool's processes
                torch.set_num_threads(1)
                cv2.setNumThreads(1)
                one = dataclasses.replace(self.settings, cut_threads=1)
                self._model = CamCutModel(one, net=CamNet(self.settings.weights or None, num_threads=1))
            return self._model

    def teardown(self, worker: Any) -> None:
        if self._model is not None:
            self._model.close()


def plugin_name(settings: Settings) -> str:
    """Runs with the same settings share one plugin (and one loaded model) per worker."""
    digest = hashlib.sha256(f"{settings!r}|{settings.label_studio_api_key}".encode()).hexdigest()[:12]
    return f"camcut-bulk-{digest}"


def predict_on_worker(name: str, project: int, label_config: str, task: Mapping[str, Any]) -> dict[str, Any]:
    """One Dask task: predict, never post. ``fatal``: this worker cannot predict at all."""
    t0 = time.monotonic()
    worker = get_worker()
    plugin = worker.plugins.get(name)
    out: dict[str, Any]
    if not isinstance(plugin, CamcutPlugin):
        out = {"task": task.get("id"), "error": f"worker {worker.address} has no camcut plugin {name}", "fatal": True}
    else:
        try:
            model = plugin.model()
        except Exception as exc:
            msg = f"worker {worker.address} cannot load the camcut model: {type(exc).__name__}: {exc}"
            out = {"task": task.get("id"), "error": redact(msg, plugin.settings.secrets), "fatal": True}
        else:
            out = predict_only(model, project, label_config, task)
            if out.get("error"):
                out["error"] = redact(out["error"], model.secrets)
    return {**out, "worker": worker.address, "seconds": time.monotonic() - t0}


def connect(address: str, timeout: float) -> Client:
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise UsageError(f"cannot reach the Dask scheduler at {address}: {exc}") from None


def run_on_cluster(bulk: BulkRun, todo: list[dict[str, Any]], label_config: str) -> None:
    """Predict ``todo`` on the cluster at ``bulk.opts.scheduler``; record each outcome as it completes."""
    assert bulk.opts.scheduler
    ClusterRun(bulk, connect(bulk.opts.scheduler, bulk.opts.cluster_timeout), label_config).run(todo)


class ClusterRun:
    """The client's event loop: Dask futures and the posting threads both report to one queue."""

    def __init__(self, bulk: BulkRun, client: Client, label_config: str) -> None:
        self.bulk, self.opts, self.client, self.label_config = bulk, bulk.opts, client, label_config
        self.name = plugin_name(bulk.settings)
        self.token = uuid.uuid4().hex[:8]  # this run's task keys: camcut-<project>-<task>-<run> on a dashboard
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.posting = ThreadPoolExecutor(max(1, self.opts.ls_connections), thread_name_prefix="camcut-post")
        self.inflight: dict[str, tuple[Any, dict[str, Any]]] = {}  # Dask key -> (future, task)
        self.posts = 0  # predictions being posted
        self.limit = RateLimit(self.opts.rate)
        self._threads, self._threads_at = 0, -1e9

    # -- the cluster's size ----------------------------------------------------------------------
    def nthreads(self) -> int:
        if time.monotonic() - self._threads_at > NTHREADS_REFRESH_S:
            self._threads, self._threads_at = sum(self.client.nthreads().values()), time.monotonic()
        return self._threads

    def capacity(self) -> int:
        return self.opts.max_inflight or max(4, 4 * self.nthreads())

    # -- the loop ----------------------------------------------------------------------------------
    def run(self, todo: list[dict[str, Any]]) -> None:
        from .run import _Abort

        opts = self.opts
        pending = deque(todo)
        no_workers_since: float | None = None
        try:
            self.client.register_plugin(CamcutPlugin(self.bulk.settings), name=self.name)
            try:
                self.client.wait_for_workers(1, timeout=opts.cluster_timeout)
            except TimeoutError:
                raise _Abort(f"no Dask worker joined {opts.scheduler} within {opts.cluster_timeout:.0f} s") from None
            self.bulk.summary.workers = self.nthreads()
            while pending or self.inflight or self.posts:
                while (
                    pending
                    and len(self.inflight) < self.capacity()
                    and self.posts < self.opts.ls_connections
                    and self.limit.delay() == 0
                ):
                    self.limit.take()
                    self.submit(pending.popleft())
                try:
                    event = self.events.get(timeout=max(0.05, min(1.0, self.limit.delay() or 1.0)))
                except queue.Empty:
                    if self.nthreads() > 0:
                        no_workers_since = None
                    elif no_workers_since is None:
                        no_workers_since = time.monotonic()
                    elif time.monotonic() - no_workers_since > opts.cluster_timeout:
                        raise _Abort(f"no Dask worker for {opts.cluster_timeout:.0f} s at {opts.scheduler}") from None
                    continue
                self.handle(*event, hook=True)
        except KeyboardInterrupt:
            self.bulk.summary.interrupted = True
            self.drain()
        finally:
            for fut, _ in self.inflight.values():
                fut.cancel()
            self.posting.shutdown(wait=True)
            try:  # frees the model on the workers (a long-lived cluster serves many runs)
                self.client.unregister_worker_plugin(self.name)
            except Exception:  # best effort: the scheduler may be gone, which is why we stop
                pass
            self.client.close(timeout=10)

    def submit(self, task: dict[str, Any]) -> None:
        key = f"camcut-{self.opts.project}-{task['id']}-{self.token}"
        fut = self.client.submit(predict_on_worker, self.name, self.opts.project, self.label_config, task, key=key, pure=False)
        self.inflight[key] = (fut, task)
        fut.add_done_callback(lambda f: self.events.put(("predicted", f)))

    def handle(self, kind: str, obj: Any, hook: bool) -> None:
        """A prediction came back (post it, or record its failure), or a post finished (record it)."""
        if kind == "posted":
            self.posts -= 1
            self.bulk._record(obj.result(), hook=hook)
            return
        entry = self.inflight.pop(obj.key, None)
        if entry is None:
            return
        fut, task = entry
        pred = self.result(fut, task)
        version, ours = pred.get("model_version"), self.bulk.summary.model_version
        if not pred.get("error") and version != ours:
            pred = {
                **pred,
                "error": f"worker {pred.get('worker')} predicts model version {version}, this run {ours}: "
                "every worker needs the same camcut, weights, settings and correction statistics",
                "fatal": True,
            }
        if pred.get("error"):
            self.bulk._record(_outcome(task, pred), hook=hook)
            return
        self.posts += 1
        t0 = time.monotonic() - float(pred.get("seconds") or 0.0)  # the task's seconds: predicting + posting
        done: ThreadFuture = self.posting.submit(post_prediction, self.bulk.api, task, pred, self.opts.overwrite, t0)
        done.add_done_callback(lambda f: self.events.put(("posted", f)))

    def result(self, fut: Any, task: Mapping[str, Any]) -> dict[str, Any]:
        try:
            return fut.result()
        except Exception as exc:  # KilledWorker, CancelledError (scheduler lost), a pickling error, ...
            kind = type(exc).__name__
            if kind == "KilledWorker":
                return {"task": task.get("id"), "error": f"the Dask workers running this task died ({exc})"}
            if self.client.status != "running":
                return {"task": task.get("id"), "error": f"lost the Dask scheduler at {self.opts.scheduler}", "fatal": True}
            return {"task": task.get("id"), "error": f"{kind}: {exc}"}
        finally:
            fut.release()

    def drain(self) -> None:
        """Ctrl-C: start nothing more; the predictions in flight are still posted and recorded (a
        second Ctrl-C stops at once and leaves them to the next run, which predicts them again)."""
        from .run import _Abort

        log.warning(
            "interrupted: finishing the %d task(s) in flight (Ctrl-C again to stop at once)", len(self.inflight) + self.posts
        )
        try:
            while self.inflight or self.posts:
                try:
                    self.handle(*self.events.get(), hook=False)
                except _Abort:
                    pass
        except KeyboardInterrupt:
            pass


def _outcome(task: Mapping[str, Any], pred: Mapping[str, Any]) -> Outcome:
    o = failed(task, str(pred.get("error")), fatal=bool(pred.get("fatal")))
    return dataclasses.replace(
        o, model_version=pred.get("model_version"), worker=pred.get("worker"), seconds=round(float(pred.get("seconds") or 0.0), 3)
    )
