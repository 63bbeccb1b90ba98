"""Pre-annotate a whole Label Studio project with camcut, resumably.

Usage (``camcut bulk`` is the same command)::

    python -m backend.bulk --project ID [--url URL] [--api-key KEY] [--workers N] [--batch K]
                           [--state FILE] [--overwrite] [--limit M] [--page-size P] [--no-progress]
                           [--scheduler tcp://HOST:8786] [--rate R] [--max-inflight F] [--ls-connections C]

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
   ``--scheduler ADDR`` (or ``CAMCUT_DASK_SCHEDULER``) runs the predictions on that Dask
   cluster's workers instead (each worker process loads the model once); this process alone
   posts them (``--ls-connections`` at once) and keeps the state file: see
   backend/bulk/cluster.py. ``--rate R`` (``CAMCUT_BULK_RATE``) starts at most R tasks per
   second on either path (back-pressure towards Label Studio).
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
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ConfigError, Settings
from ..redaction import redact
from .errors import EXIT_INTERRUPTED, EXIT_USAGE, UsageError
from .logs import configure_logging
from .run import BulkRun, Options
from .worker import Outcome

if TYPE_CHECKING:
    from ..model import CamCutModel


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m backend.bulk", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--project", type=int, required=True, help="Label Studio project id")
    p.add_argument("--url", default=None, help="Label Studio URL (default: $LABEL_STUDIO_URL)")
    p.add_argument(
        "--api-key", default=None, help="API key, legacy token or PAT (default: $LABEL_STUDIO_API_KEY; prefer the env var)"
    )
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="worker processes (0: in this process)")
    p.add_argument("--batch", type=int, default=1, help="tasks handed to a worker at a time (default 1)")
    p.add_argument("--state", type=Path, default=None, help="state file (default: $MODEL_DIR/bulk-<project>.jsonl)")
    p.add_argument(
        "--overwrite", action="store_true", help="predict every task again, replacing predictions of the same model version"
    )
    p.add_argument("--limit", type=int, default=None, help="predict at most this many tasks in this run")
    p.add_argument("--page-size", type=int, default=100, help="tasks per page when listing (default 100)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--scheduler", default=None, help="Dask scheduler tcp://host:8786: predict on its workers ($CAMCUT_DASK_SCHEDULER)"
    )
    p.add_argument("--rate", type=float, default=None, help="tasks started per second at most, 0 = no cap ($CAMCUT_BULK_RATE)")
    p.add_argument("--max-inflight", type=int, default=None, help="cluster: tasks in flight at most (default 4 x worker threads)")
    p.add_argument("--ls-connections", type=int, default=2, help="cluster: posts to Label Studio at once (default 2)")
    p.add_argument("--cluster-timeout", type=float, default=60.0, help="cluster: seconds to wait for a scheduler / a worker")
    p.add_argument("-v", "--verbose", action="store_true", help="log per-task warnings (INFO)")
    return p


def main(
    argv: list[str] | None = None,
    env: Mapping[str, str] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
    model: CamCutModel | None = None,
) -> int:
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
    configure_logging(settings, level="INFO" if args.verbose else "WARNING")
    opts = Options(
        project=args.project,
        workers=args.workers,
        batch=args.batch,
        state=args.state,
        overwrite=args.overwrite,
        limit=args.limit,
        page_size=args.page_size,
        progress=not args.no_progress,
        scheduler=(args.scheduler if args.scheduler is not None else settings.dask_scheduler).strip() or None,
        rate=args.rate if args.rate is not None else settings.bulk_rate,
        max_inflight=args.max_inflight,
        ls_connections=args.ls_connections,
        cluster_timeout=args.cluster_timeout,
    )
    try:
        run = BulkRun(opts, settings, model=model, on_outcome=on_outcome)
        summary = run.run()
    except UsageError as exc:
        print(f"camcut bulk: error: {redact(str(exc), settings.secrets)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("camcut bulk: interrupted before any task was predicted", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(redact(summary.render(), settings.secrets), flush=True)
    return summary.exit_code


def sigterm_as_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM stops a run like Ctrl-C: the tasks in flight are finished and recorded first."""
    raise KeyboardInterrupt
