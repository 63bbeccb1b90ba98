"""One task of a bulk run (predict, post to LS) and the worker processes that run them."""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..labelstudio import LabelStudioClient, LabelStudioError
from ..redaction import redact
from .logs import configure_logging

if TYPE_CHECKING:  # heavy imports (torch) stay out of the module top level: workers set threads first
    from ..model import CamCutModel


@dataclass(frozen=True)
class Outcome:
    """What became of one task. ``fatal``: the run cannot go on (LS unreachable, key refused,
    workers that cannot start); ``worker_died``: the worker process was lost with the task."""

    task: Any
    status: str = "failed"  # "done" | "failed"
    model_version: str | None = None
    prediction: int | None = None
    regions: int = 0
    error: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    fatal: bool = False
    seconds: float = 0.0
    mode: str | None = None
    worker_died: bool = False
    worker: str | None = None  # the Dask worker that predicted it (cluster runs)

    @property
    def done(self) -> bool:
        return self.status == "done"

    def record(self) -> dict[str, Any]:
        """The state file's fields (``at`` is added when it is written)."""
        return {
            "task": self.task,
            "status": self.status,
            "model_version": self.model_version,
            "prediction": self.prediction,
            "regions": self.regions,
            "error": self.error,
            "seconds": self.seconds,
            **({"worker": self.worker} if self.worker else {}),
        }


def failed(task: Mapping[str, Any], error: str, fatal: bool = False, worker_died: bool = False) -> Outcome:
    return Outcome(task.get("id"), error=error, fatal=fatal, worker_died=worker_died)


def predict_only(model: CamCutModel, project: int, label_config: str, task: Mapping[str, Any]) -> dict[str, Any]:
    """The prediction half of a task: ``{"task", "model_version", "warnings", "error"?, "result",
    "score", "mode"}``. Never raises (an exception becomes ``error``). The cluster runner's
    workers run only this half; the client posts (backend/bulk/cluster.py)."""
    out: dict[str, Any] = {"task": task.get("id")}
    try:
        [pred] = model.predict([dict(task)], str(project), label_config, None)
        out.update(
            model_version=pred.get("model_version"),
            warnings=tuple(pred.get("warnings") or ()),
            result=pred.get("result") or [],
            score=pred.get("score"),
            mode=pred.get("mode"),
        )
        if pred.get("error"):  # no mask because none of the project's classes is there is a result, posted
            out["error"] = str(pred["error"])
    except LabelStudioError as exc:  # LS unreachable or the key refused: the run cannot go on
        out.update(error=str(exc), fatal=exc.fatal)
    except Exception as exc:  # one bad task never stops the run
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def post_prediction(
    api: LabelStudioClient, task: Mapping[str, Any], pred: Mapping[str, Any], overwrite: bool = False, t0: float | None = None
) -> Outcome:
    """The writing half: store ``pred`` (from :func:`predict_only`) in LS, then, with
    ``overwrite``, delete the task's older predictions of the same model version. Never raises."""
    t0 = time.monotonic() if t0 is None else t0
    tid = task.get("id")
    out: dict[str, Any] = {
        "task": tid,
        "model_version": pred.get("model_version"),
        "warnings": tuple(pred.get("warnings") or ()),
        "worker": pred.get("worker"),
    }
    if pred.get("error"):
        out.update(error=str(pred["error"]), fatal=bool(pred.get("fatal")))
    else:
        result = list(pred.get("result") or [])
        try:
            created = api.post_prediction(int(tid), result, pred.get("score"), str(pred["model_version"]))  # type: ignore[arg-type]
            out.update(status="done", prediction=created.get("id"), regions=len(result), mode=pred.get("mode"))
            if overwrite:
                for old in task.get("predictions") or []:
                    if (
                        isinstance(old, dict)
                        and old.get("model_version") == pred["model_version"]
                        and isinstance(old.get("id"), int)
                        and old["id"] != created.get("id")
                    ):
                        api.delete_prediction(old["id"])
        except LabelStudioError as exc:
            out["error"] = str(exc)
            out["fatal"] = exc.fatal
        except Exception as exc:  # one bad task never stops the run
            out["error"] = f"{type(exc).__name__}: {exc}"
    out["error"] = redact(out["error"], api.secrets) if out.get("error") else None
    return Outcome(**out, seconds=round(time.monotonic() - t0, 3))


def predict_and_post(
    model: CamCutModel, api: LabelStudioClient, project: int, label_config: str, task: Mapping[str, Any], overwrite: bool = False
) -> Outcome:
    """Predict one task and store the prediction in LS. Never raises."""
    t0 = time.monotonic()
    pred = predict_only(model, project, label_config, task)
    if pred.get("error"):
        pred["error"] = redact(pred["error"], tuple(getattr(model, "secrets", ()) or ()))
    return post_prediction(api, task, pred, overwrite, t0)


# ------------------------------------------------------------------------------------ worker processes
_WORKER: dict[str, Any] = {}


def init_worker(settings: Settings, project: int, label_config: str, overwrite: bool, log_level: str) -> None:
    """Worker process start: 1 thread for torch/OpenCV, the CNN loaded once, Ctrl-C left to the parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    configure_logging(settings, level=log_level)
    _WORKER.update(project=project, label_config=label_config, overwrite=overwrite, error=None)
    try:
        import cv2
        import torch

        torch.set_num_threads(1)
        cv2.setNumThreads(1)
        from model import CamNet

        from ..model import CamCutModel

        # The workers already fill the cores: one GrabCut at a time in each.
        one_thread = dataclasses.replace(settings, cut_threads=1)
        _WORKER["model"] = CamCutModel(one_thread, net=CamNet(settings.weights or None, num_threads=1))
        _WORKER["api"] = LabelStudioClient(settings.label_studio_url, settings.label_studio_api_key, settings.download_timeout)
    except Exception as exc:  # reported through every job, so the parent can stop cleanly
        _WORKER["error"] = redact(f"worker start failed: {type(exc).__name__}: {exc}", settings.secrets)


def work(tasks: list[dict[str, Any]]) -> list[Outcome]:
    """One job in a worker process: its tasks, one after the other."""
    if _WORKER.get("error"):
        return [failed(t, _WORKER["error"], fatal=True) for t in tasks]
    return [
        predict_and_post(_WORKER["model"], _WORKER["api"], _WORKER["project"], _WORKER["label_config"], t, _WORKER["overwrite"])
        for t in tasks
    ]
