"""Keep the Label Studio project's ``model_version`` equal to camcut's current model version.

Why (LS 1.23.2 source): on *Connect model* LS sets ``project.model_version`` to the backend's
*title* (ml/api.py ``perform_create``). The Data Manager's prediction-score column averages only
predictions whose ``model_version`` equals ``project.model_version`` (data_manager/managers.py
``annotate_predictions_score``; the per-backend variant is behind a feature flag that is off),
and the labelling view shows only those predictions (tasks/serializers.py ``get_predictions``).
camcut's predictions carry ``camcut-<config>-<hash>``, which changes with corrections, so the
column stayed empty until the user picked the version by hand, and went stale on every change.

So after answering a /predict for a project, camcut reads the project and, if its
``model_version`` is empty, the title of one of its ML backends or an older ``camcut-`` version,
PATCHes it to the current version (``PATCH /api/projects/<id>`` ``{"model_version": ...}``). A
version the user chose by hand for other predictions (anything else) is left alone. It runs in a
background thread (a slow LS never delays an answer), at most once per project and version per
worker process unless LS shows it changed back; a failure is logged and retried next time.
Live predictions on opening a task do not depend on the value (tasks/api.py asks the backend
whenever a task has no prediction).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from .labelstudio import LabelStudioClient, LabelStudioError

log = logging.getLogger("backend.version_sync")

RETRY_WAITS_S = (1.0, 2.0, 4.0, 8.0, 15.0)  # seconds before each retry of a refused PATCH (30 s in all)


class VersionSync:
    def __init__(self, client: LabelStudioClient) -> None:
        self.client = client
        self._done: dict[int, str] = {}  # project -> version LS was seen holding / set to
        self._busy: set[int] = set()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.client.configured and self.client.api_key)

    def schedule(self, project: str, version: str) -> threading.Thread | None:
        """Sync in the background; the thread (None: nothing to do) is returned for tests."""
        pid = int(project) if project.isdigit() else None
        if pid is None or not self.enabled:
            return None
        with self._lock:
            if self._done.get(pid) == version or pid in self._busy:
                return None
            self._busy.add(pid)
        t = threading.Thread(target=self._run, args=(pid, version), name=f"version-sync-{pid}", daemon=True)
        t.start()
        return t

    def _run(self, pid: int, version: str) -> None:
        try:
            waits = (0.0, *RETRY_WAITS_S)
            for n, wait in enumerate(waits, 1):
                time.sleep(wait)  # a backoff in this background thread (LS is still storing), not a sync point
                try:
                    self.sync(pid, version)
                    return
                except LabelStudioError as exc:
                    # LS 1.23.2 refuses (400 "Model version doesn't exist either as live model or as
                    # static predictions") a version it has no prediction of yet: after a batch
                    # /predict it stores our answers only once we have answered, so the PATCH that
                    # follows the answer can come first. Seen with 20 tasks in one retrieve.
                    if exc.status != 400 or n == len(waits):
                        raise
        except LabelStudioError as exc:
            log.warning("project %s: cannot set Label Studio's model version to %s: %s", pid, version, exc)
        finally:
            with self._lock:
                self._busy.discard(pid)

    def sync(self, pid: int, version: str) -> bool:
        """Set the project's model_version to ``version`` if it is camcut's to set; True if PATCHed."""
        project: Any = self.client.project(pid)
        current = str((project or {}).get("model_version") or "") if isinstance(project, dict) else ""
        if current == version:
            self._remember(pid, version)
            return False
        if current and not current.startswith("camcut-") and current not in self._backend_titles(pid):
            log.info("project %s: model version %r was chosen by hand; camcut's %s is not set", pid, current, version)
            self._remember(pid, version)
            return False
        self.client.request("PATCH", f"/api/projects/{pid}/", body={"model_version": version}, ok=(200,))
        log.info("project %s: Label Studio's model version %r -> %s", pid, current, version)
        self._remember(pid, version)
        return True

    def _backend_titles(self, pid: int) -> set[str]:
        res = self.client.get_json("/api/ml/", {"project": pid})
        items = res if isinstance(res, list) else (res or {}).get("results", []) if isinstance(res, dict) else []
        return {str(m.get("title")) for m in items if isinstance(m, dict) and m.get("title")}

    def _remember(self, pid: int, version: str) -> None:
        with self._lock:
            self._done[pid] = version
