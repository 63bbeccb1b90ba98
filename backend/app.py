"""Flask app speaking Label Studio's ML backend protocol (as label-studio-ml 2.x / LS 1.23).

``create_app()`` builds one :class:`backend.model.CamCutModel` (the CNN loaded once per
process); every request makes its own Segmenter. Payloads:

* ``GET /``, ``GET /health``  -> ``{"status": "UP", "model_class": "CamCutModel"}`` (no auth)
* ``POST /setup``   ``{project: "<id>.<ts>", schema, hostname, access_token, extra_params}``
  -> ``{"model_version": ...}``
* ``POST /predict`` ``{tasks, project, label_config, params: {context}}`` -> ``{"results": [
  {result: [...], score, model_version}, ...]}`` one per task, in order; a task that fails gets
  ``result: []`` and an ``error``
* ``POST /webhook`` ``{action, annotation, task, project}`` -> 201 ``{status, ...}``; unknown
  actions -> 200 ``{"status": "Unknown event"}``
* ``GET /metrics``  -> counters, per-project corrections and adapted thresholds
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import BadRequest, HTTPException

from model import CamNet

from .config import ConfigError, Settings
from .redaction import RedactingFilter, install_filter, redact
from .model import TRAIN_EVENTS, CamCutModel, SchemaError, TaskError, is_interactive_context

log = logging.getLogger("backend.app")
OPEN_PATHS = ("/", "/health")
REDACTED_LOGGERS = ("backend", "backend.app", "backend.model", "backend.fetch", "werkzeug", "gunicorn.error", "gunicorn.access", "urllib3")


def configure_logging(settings: Settings) -> None:
    """Log level from LOG_LEVEL; redact credentials on every handler and our loggers."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_filter(RedactingFilter(lambda: settings.secrets), REDACTED_LOGGERS, root.handlers)
    logging.getLogger("backend").setLevel(settings.log_level)


def _project_id(value: Any) -> str:
    """LS sends project as "<id>.<created timestamp>"; statistics are kept per id."""
    if value is None:
        return ""
    return str(value).split(".", 1)[0]


def _is_interactive(data: dict[str, Any]) -> bool:
    """LS's interactive pre-annotation: one task and a non-empty ``params.context.result``."""
    params = data.get("params")
    ctx = (params.get("context") if isinstance(params, dict) else None) or data.get("context")
    tasks = data.get("tasks")
    return isinstance(tasks, list) and len(tasks) == 1 and is_interactive_context(ctx)


def create_app(settings: Settings | None = None, net: CamNet | None = None, model: CamCutModel | None = None) -> Flask:
    settings = settings or Settings.from_env()
    configure_logging(settings)
    mdl = model or CamCutModel(settings, net=net)
    app = Flask("camcut")
    app.config["CAMCUT_MODEL"] = mdl
    counters = {"predict_requests": 0, "predict_tasks": 0, "task_errors": 0, "webhook_events": 0, "seconds_predicting": 0.0,
                "predict_rejected_busy": 0}
    # Bounded /predict concurrency per process: gthread queues requests beyond THREADS without
    # bound, so a full worker answers 503 + Retry-After at once instead of letting them pile up.
    # One extra slot is kept for interactive calls (one task + params.context, an annotator waiting)
    # so that batch pre-annotation cannot starve them.
    inflight = threading.BoundedSemaphore(settings.max_inflight)
    interactive_lane = threading.BoundedSemaphore(1)

    def body() -> dict[str, Any]:
        try:
            data = request.get_json(force=True, silent=False)
        except BadRequest:
            raise BadRequest("the request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise BadRequest("the request body must be a JSON object")
        return data

    @app.before_request
    def check_auth() -> Response | None:
        auth = settings.basic_auth
        if auth is None or request.path in OPEN_PATHS:
            return None
        given = request.authorization
        ok = (
            given is not None
            and given.type == "basic"
            and hmac.compare_digest(str(given.username or ""), auth[0])
            and hmac.compare_digest(str(given.password or ""), auth[1])
        )
        if ok:
            return None
        return Response("Unauthorized", 401, {"WWW-Authenticate": 'Basic realm="camcut"'})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify({"error": exc.description, "status": exc.code}), exc.code or 500

    @app.errorhandler(SchemaError)
    def schema_error(exc: SchemaError) -> tuple[Response, int]:
        log.warning("%s %s: %s", request.method, request.path, exc)
        return jsonify({"error": str(exc), "status": 400}), 400

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        msg = redact(f"{type(exc).__name__}: {exc}", mdl.secrets)
        log.exception("%s %s failed: %s", request.method, request.path, msg)
        return jsonify({"error": msg, "status": 500}), 500

    @app.get("/")
    @app.get("/health")
    def health() -> Response:
        return jsonify({"status": "UP", "model_class": type(mdl).__name__, "model_dir": str(settings.model_dir)})

    @app.post("/setup")
    def setup() -> Response:
        data = body()
        schema = data.get("schema") or data.get("label_config") or ""
        if not isinstance(schema, str):
            raise BadRequest("'schema' must be a string (the project's labelling config XML)")
        return jsonify(mdl.setup(_project_id(data.get("project")), schema))

    @app.post("/predict")
    def predict() -> Response:
        data = body()
        lane = inflight if inflight.acquire(blocking=False) else None
        if lane is None and _is_interactive(data) and interactive_lane.acquire(blocking=False):
            lane = interactive_lane
        if lane is None:
            counters["predict_rejected_busy"] += 1
            resp = jsonify({"error": f"busy: {settings.max_inflight} /predict request(s) already running in this worker, retry later",
                            "status": 503})
            resp.status_code = 503
            resp.headers["Retry-After"] = "1"
            return resp
        try:
            return _predict(data)
        finally:
            lane.release()

    def _predict(data: dict[str, Any]) -> Response:
        tasks = data.get("tasks")
        if not isinstance(tasks, list):
            raise BadRequest("'tasks' must be a list of tasks")
        params = data.get("params") or {}
        if not isinstance(params, dict):
            raise BadRequest("'params' must be an object")
        context = params.get("context") or data.get("context")
        if context is not None and not isinstance(context, dict):
            raise BadRequest("'params.context' must be an object")
        label_config = data.get("label_config") or ""
        if not isinstance(label_config, str):
            raise BadRequest("'label_config' must be a string (the project's labelling config XML)")
        t0 = time.monotonic()
        timings: dict[str, float] = {}
        results = mdl.predict(tasks, _project_id(data.get("project")), label_config, context, timings)
        spent = time.monotonic() - t0
        counters["predict_requests"] += 1
        counters["predict_tasks"] += len(tasks)
        counters["task_errors"] += sum(1 for r in results if r.get("error") and not r.get("result"))
        counters["seconds_predicting"] += spent
        resp = jsonify({"results": results, "model_version": results[0]["model_version"] if results else mdl.model_version(_project_id(data.get("project")))})
        # W3C Server-Timing: lets a client (the benchmark) split its latency into the model's
        # work, image downloads and what HTTP + JSON add, within the same request.
        resp.headers["Server-Timing"] = f"predict;dur={spent * 1000:.2f}, download;dur={timings.get('download', 0.0) * 1000:.2f}"
        return resp

    @app.post("/webhook")
    def webhook() -> tuple[Response, int]:
        data = body()
        event = data.pop("action", None)
        counters["webhook_events"] += 1
        if event not in TRAIN_EVENTS:
            return jsonify({"status": "Unknown event", "action": event}), 200
        try:
            res = mdl.fit(str(event), data)
        except (TaskError, SchemaError) as exc:
            raise BadRequest(str(exc)) from None
        return jsonify(res), 201

    @app.get("/metrics")
    def metrics() -> Response:
        return jsonify({**mdl.metrics(), "counters": {**counters, "seconds_predicting": round(counters["seconds_predicting"], 3)}, "pid": os.getpid()})

    return app


def main() -> None:  # pragma: no cover - development server
    try:
        settings = Settings.from_env()
        app = create_app(settings)
    except ConfigError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    app.run(host=settings.bind_host, port=settings.port)


if __name__ == "__main__":  # pragma: no cover
    main()
