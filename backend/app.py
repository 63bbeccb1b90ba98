"""Flask app speaking Label Studio's ML backend protocol (as label-studio-ml 2.x / LS 1.23).

``create_app()`` builds one :class:`backend.model.CamCutModel` (the CNN loaded once per
process); every request makes its own Segmenter. Payloads:

* ``GET /``, ``GET /health``  -> ``{"status": "UP", "model_class": "CamCutModel"}`` (no auth)
* ``POST /setup``   ``{project: "<id>.<ts>", schema, hostname, access_token, extra_params}``
  -> ``{"model_version": ...}``
* ``POST /predict`` ``{tasks, project, label_config, params: {context}}`` -> ``{"results": [
  {result: [...], score, model_version}, ...]}`` one per task, in order; a task that fails gets
  ``result: []`` and an ``error``
* ``POST /webhook`` ``{action, annotation(s), project}`` -> 201 ``{status, ...}`` once the event
  is stored (a notification: ``backend/corrections.py``); unknown actions -> 200
  ``{"status": "Unknown event"}``; 503 + Retry-After when too many events wait
* ``GET /metrics``  -> counters, per-project corrections and adapted thresholds
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import threading
import time
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import BadRequest, HTTPException, RequestEntityTooLarge

from model import CamNet

from .config import ConfigError, Settings
from .errors import InboxFull
from .model import TRAIN_EVENTS, CamCutModel, SchemaError, TaskError, is_interactive_context
from .redaction import RedactingFilter, install_filter, log_safe

log = logging.getLogger("backend.app")
OPEN_PATHS = ("/", "/health")
REDACTED_LOGGERS = (
    "backend",
    "backend.app",
    "backend.model",
    "backend.fetch",
    "werkzeug",
    "gunicorn.error",
    "gunicorn.access",
    "urllib3",
)


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


def _basic_auth_ok(header: str, expected: tuple[str, str]) -> bool:
    """Compare HTTP basic credentials as bytes, in constant time.

    werkzeug decodes the header as UTF-8 into str and hmac.compare_digest refuses non-ASCII
    str (TypeError, a 500 on every protected endpoint); a latin-1 header does not decode at all.
    Bytes compare whatever the client sent; config.py only accepts ASCII credentials, so a
    non-ASCII header is simply a wrong one (401)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    user, sep, password = raw.partition(b":")
    want_user, want_pass = expected[0].encode(), expected[1].encode()
    # both compared (no early exit), so the timing does not tell which one was wrong
    ok_user = hmac.compare_digest(user, want_user)
    ok_pass = hmac.compare_digest(password, want_pass)
    return bool(sep) and ok_user and ok_pass


def create_app(settings: Settings | None = None, net: CamNet | None = None, model: CamCutModel | None = None) -> Flask:
    settings = settings or Settings.from_env()
    configure_logging(settings)
    mdl = model or CamCutModel(settings, net=net)
    mdl.corrections.start()  # webhook events: the ones left waiting by an earlier run first
    if not mdl.settings.webhook_sync:
        mdl.learner.start()  # head re-fits in the background, the ones left due by an earlier run first
    app = Flask("camcut")
    app.config["CAMCUT_MODEL"] = mdl
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes  # werkzeug answers 413 past it, before parsing
    counters = {
        "predict_requests": 0,
        "predict_tasks": 0,
        "task_errors": 0,
        "webhook_events": 0,
        "seconds_predicting": 0.0,
        "predict_rejected_busy": 0,
    }
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
        except RecursionError:  # e.g. [[[[...]]]] 100,000 deep: json's decoder recurses per level
            raise BadRequest("the request body is nested too deeply") from None
        if not isinstance(data, dict):
            raise BadRequest("the request body must be a JSON object")
        return data

    @app.before_request
    def check_auth() -> Response | None:
        auth = settings.basic_auth
        if request.path == "/webhook":
            # LS's webhooks carry no basic auth and the body is only a notification (re-read
            # from LS): open unless CAMCUT_WEBHOOK_SECRET is set; then that header or basic auth
            secret = settings.webhook_secret
            if not secret or hmac.compare_digest(request.headers.get("X-Camcut-Webhook-Secret", ""), secret):
                return None
            if auth is None:
                return Response("Unauthorized: X-Camcut-Webhook-Secret", 401)
        if auth is None or request.path in OPEN_PATHS:
            return None
        if _basic_auth_ok(request.headers.get("Authorization", ""), auth):
            return None
        return Response("Unauthorized", 401, {"WWW-Authenticate": 'Basic realm="camcut"'})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify({"error": exc.description, "status": exc.code}), exc.code or 500

    @app.errorhandler(SchemaError)
    def schema_error(exc: SchemaError) -> tuple[Response, int]:
        log.warning("%s %s: %s", request.method, request.path, exc)
        return jsonify({"error": str(exc), "status": 400}), 400

    @app.errorhandler(InboxFull)
    def inbox_full(exc: InboxFull) -> tuple[Response, int, dict[str, str]]:
        log.warning("/webhook: %s", exc)
        return jsonify({"error": str(exc), "status": 503}), 503, {"Retry-After": "5"}

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        msg = log_safe(f"{type(exc).__name__}: {exc}", 500, mdl.secrets)  # no heap addresses, no forged lines
        log.exception("%s %s failed: %s", request.method, request.path, msg)
        return jsonify({"error": msg, "status": 500}), 500

    @app.get("/")
    @app.get("/health")
    def health() -> Response:
        # no paths or versions here: /health is open to anyone who can reach the port
        return jsonify({"status": "UP", "model_class": type(mdl).__name__, "learning": mdl.corrections.learning})

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
            resp = jsonify(
                {
                    "error": f"busy: {settings.max_inflight} /predict request(s) already running in this worker, retry later",
                    "status": 503,
                }
            )
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
        if len(tasks) > settings.max_tasks:
            raise RequestEntityTooLarge(f"{len(tasks)} tasks in one request, more than CAMCUT_MAX_TASKS={settings.max_tasks}")
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
        resp = jsonify(
            {
                "results": results,
                "model_version": results[0]["model_version"] if results else mdl.model_version(_project_id(data.get("project"))),
            }
        )
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
        return jsonify(
            {
                **mdl.metrics(),
                "counters": {**counters, "seconds_predicting": round(counters["seconds_predicting"], 3)},
                "pid": os.getpid(),
            }
        )

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
