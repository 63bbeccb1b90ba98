"""Every setting of the camcut Label Studio ML backend, read from environment variables.

Running it
----------
``make run`` = ``camcut serve`` (= ``gunicorn --config backend/gunicorn_conf.py backend.wsgi:app``)
serves the Label Studio ML backend protocol on ``$CAMCUT_BIND:$PORT`` (default 0.0.0.0:9090).
In Label Studio open
*Project settings -> Model -> Connect model* and enter the backend URL (tick *Interactive
preannotations* for the interactive mode). The project's labelling config must have a
``<BrushLabels>`` tag on an ``<Image>``; ``<RectangleLabels>`` and ``<Choices>`` tags on the
same image are read as prompts.

Endpoints: ``GET /`` and ``GET /health`` (always open), ``POST /setup``, ``POST /predict``,
``POST /webhook``, ``GET /metrics`` (basic auth if ``BASIC_AUTH_USER`` is set, except
``/webhook``: see Correction loop).

What is predicted for a task (first match wins)
-----------------------------------------------
1. *Interactive* (``params.context.result`` sent by LS's interactive pre-annotation): the
   rectangle / keypoints (``is_positive``) / brush strokes the annotator just made are hard
   seeds; one mask per rectangle (or one mask from the seeds alone).
2. *Boxes*: ``rectanglelabels`` already on the task (newest non-cancelled annotation, else
   predictions; if LS did not send them, ``GET /api/tasks/{id}`` with the API key). One brush
   mask per box, labelled with the box's label.
3. *Tags*: a ``choices`` result on the task, else a list or comma-separated string in one of
   the task data fields named by ``CAMCUT_TAG_FIELDS`` (default ``tags,classes``). One brush
   mask per class.
4. *Nothing given*: the CNN's own class guesses (probability >= ``CAMCUT_MIN_CLASS_PROBABILITY``,
   at most ``CAMCUT_MAX_CLASSES`` classes).

Labels map to the 20 VOC classes case-insensitively with synonyms (``backend/labels.py``),
overridable by the JSON file ``CAMCUT_LABEL_MAP`` (``{"my label": "voc class" | null}``). A
label with no VOC class still gets a mask from its box (naked GrabCut) and is reported in the
prediction's ``warnings`` and the log.

Correction loop
---------------
LS posts ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED`` / ``ANNOTATIONS_DELETED`` to
``/webhook``. The body is only a notification: the event is stored in ``MODEL_DIR`` before the
answer, then the annotation, task and labelling config are read back from ``LABEL_STUDIO_URL``
with the key (``backend/corrections.py``); without both nothing is learned. Label Studio's
webhooks carry no credentials, so ``/webhook`` is not behind basic auth; ``CAMCUT_WEBHOOK_SECRET``
makes it need a header that LS's webhook settings can send. Each submitted brush
mask is compared with what was predicted for that task (kept in ``MODEL_DIR``), every
candidate threshold ``t`` of the configured variant is scored against the correction
(``model/adapt.py``) and, once a class has ``CAMCUT_MIN_CORRECTIONS`` corrections in a
project, its best-average ``t`` is used for that project and the model version changes.
Statistics live in ``MODEL_DIR/camcut.sqlite3``, or in the PostgreSQL database of
``CAMCUT_DATABASE_URL`` that replicas share (survive restarts; an annotation id + LS's
``updated_at`` is counted once).

Image access and safety
-----------------------
``/data/upload/...`` and ``/data/local-files/?d=...`` are fetched from ``LABEL_STUDIO_URL``
with the API key; ``s3://``, ``gs://``, ``azure-blob://`` URIs are presigned through LS
(``/tasks/{id}/presign/?fileuri=<base64>``); plain ``http(s)`` URLs must be on LS's host or
in ``CAMCUT_ALLOWED_HOSTS``. A JWT-shaped key is a personal access token (refreshed at
``/api/token/refresh`` into a ``Bearer`` token); anything else is a legacy ``Token``. The
key is only ever sent to LS's own host. The ``hostname`` / ``access_token`` that LS sends in
``/setup`` are deliberately ignored: the trusted host and key come from the environment only.
Redirects are followed by hand and re-checked; hosts
matched by a wildcard must resolve to public addresses; size, pixel count and time are
bounded. Authorization headers and ``token=`` URL parameters are redacted from logs.
Residual risk: a wildcard-matched host's DNS answer may change between the check and the
connection (DNS rebinding); list exact hosts when that matters.

Settings
--------
Every setting is one row of ``SETTINGS`` below (environment variable, type, default, help):
that table builds :class:`Settings`, ``python -m backend.config``'s listing and, through
``python -m backend.config --markdown``, the README's configuration table (a test keeps the
two equal).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .redaction import runtime_secrets


class ConfigError(ValueError):
    """An environment variable has an unusable value."""


# ------------------------------------------------------------------------------------ value types
# A parser turns the (stripped) text of one variable into its value, or raises ConfigError.
Parser = Callable[[str, str], Any]


def text(name: str, raw: str) -> str:
    return raw


def url(name: str, raw: str) -> str:
    return raw.rstrip("/")


def database_url(name: str, raw: str) -> str:
    """Empty (SQLite in MODEL_DIR) or a PostgreSQL URL; anything else is refused at start-up
    rather than silently using the local file."""
    if raw and not raw.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"{name} must be empty (SQLite in MODEL_DIR) or a postgresql:// URL")
    return raw


def integer(minimum: int = 0) -> Parser:
    def parse(name: str, raw: str) -> int:
        try:
            v = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
        if v < minimum:
            raise ConfigError(f"{name} must be >= {minimum}, got {v}")
        return v

    return parse


def number(lo: float = 0.0, hi: float = float("inf")) -> Parser:
    def parse(name: str, raw: str) -> float:
        try:
            v = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if not lo <= v <= hi:
            raise ConfigError(f"{name} must be in [{lo}, {hi}], got {v}")
        return v

    return parse


def names(name: str, raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def thresholds(name: str, raw: str) -> tuple[float, ...]:
    parts = names(name, raw)
    try:
        ts = tuple(sorted({float(t) for t in parts}))
    except ValueError:
        raise ConfigError(f"{name} must be numbers, got {parts}") from None
    if not ts or not all(0.0 < t < 1.0 for t in ts):
        raise ConfigError(f"{name} must be numbers strictly between 0 and 1")
    return ts


def log_level(name: str, raw: str) -> str:
    level = raw.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ConfigError(f"{name} must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
    return level


def flag(name: str, raw: str) -> bool:
    return raw.lower() in ("1", "true", "yes", "on")


def directory(name: str, raw: str) -> Path:
    return Path(raw).expanduser() if raw else Path()  # empty: resolved by Settings.from_env (needs the environment)


def default_model_dir(env: Mapping[str, str]) -> Path:
    """Out of the work tree: ``$XDG_STATE_HOME/camcut``, else ``~/.local/state/camcut``."""
    state = env.get("XDG_STATE_HOME", "").strip()
    return (Path(state) if state else Path(env.get("HOME") or Path.home()) / ".local" / "state") / "camcut"


# ------------------------------------------------------------------------------------ the table
@dataclass(frozen=True)
class Setting:
    """One row of the configuration: where it lives (``name`` of the Settings attribute, ``env``
    variable), its default as the text one would write in the environment, how it is read, what
    it means."""

    name: str
    env: str
    default: str
    parse: Parser
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "bind_host",
        "CAMCUT_BIND",
        "0.0.0.0",
        text,
        "address gunicorn binds on (camcut serve / make run); 127.0.0.1: this host only",
    ),
    Setting("port", "PORT", "9090", integer(1), "port gunicorn binds on"),
    Setting("workers", "WORKERS", "1", integer(1), "gunicorn worker processes (each loads the CNN once, ~5 MB weights)"),
    Setting(
        "threads", "THREADS", "4", integer(1), "threads per worker (one Segmenter per request; the CNN is shared and locked)"
    ),
    Setting("timeout", "TIMEOUT", "300", integer(0), "gunicorn worker timeout in seconds (a batch /predict can be long on CPU)"),
    Setting("log_level", "LOG_LEVEL", "INFO", log_level, "DEBUG, INFO, WARNING or ERROR"),
    Setting(
        "front",
        "CAMCUT_FRONT",
        "1",
        flag,
        "1: serve through backend/front.py, which reads whole requests before gunicorn sees them; 0: gunicorn alone",
    ),
    Setting(
        "header_timeout",
        "CAMCUT_HEADER_TIMEOUT",
        "10",
        number(0.1),
        "front: seconds for a request line and headers (also the idle keep-alive limit); then 408",
    ),
    Setting("body_timeout", "CAMCUT_BODY_TIMEOUT", "30", number(0.1), "front: seconds for a whole request body; then 408"),
    Setting("max_connections", "CAMCUT_MAX_CONNECTIONS", "2000", integer(1), "front: open connections; more are closed at once"),
    Setting(
        "label_studio_url",
        "LABEL_STUDIO_URL",
        "",
        url,
        "base URL of Label Studio, e.g. http://label-studio:8080; its host is trusted for images",
    ),
    Setting(
        "label_studio_api_key",
        "LABEL_STUDIO_API_KEY",
        "",
        text,
        "legacy API token or personal access token (JWT refresh token); sent only to LABEL_STUDIO_URL",
    ),
    Setting(
        "basic_auth_user",
        "BASIC_AUTH_USER",
        "",
        text,
        "if set (with BASIC_AUTH_PASS), every endpoint but / and /health needs HTTP basic auth",
    ),
    Setting("basic_auth_pass", "BASIC_AUTH_PASS", "", text, "basic auth password"),
    Setting(
        "model_dir",
        "MODEL_DIR",
        "",
        directory,
        "writable directory for the SQLite statistics, per-task prediction records and bulk state files; "
        "empty: $XDG_STATE_HOME/camcut, else ~/.local/state/camcut",
    ),
    Setting(
        "database_url",
        "CAMCUT_DATABASE_URL",
        "",
        database_url,
        "where corrections, statistics and the webhook inbox live: empty = SQLite MODEL_DIR/camcut.sqlite3; "
        "postgresql://user:pass@host:5432/db = one database that every replica shares",
    ),
    Setting(
        "engine_config",
        "CAMCUT_CONFIG",
        "featcut",
        text,
        "engine configuration: featcut (served: the feature cut, see README Results), default (the GrabCut "
        "core served before it), quality (slower GrabCut) or reference (the report's pipeline)",
    ),
    Setting(
        "box_technique",
        "CAMCUT_BOX_TECHNIQUE",
        "",
        text,
        "technique for boxes, e.g. 'fpf 0.6', 'grabcut'; empty: the engine config's",
    ),
    Setting(
        "class_technique",
        "CAMCUT_CLASS_TECHNIQUE",
        "",
        text,
        "technique for tags / guessed classes, e.g. 'pfpb 0.3'; empty: the engine config's",
    ),
    Setting("weights", "CAMCUT_WEIGHTS", "", text, "SqueezeNet weights path; empty: the packaged weights"),
    Setting("label_map", "CAMCUT_LABEL_MAP", "", text, "JSON file {label: voc_class or null} overriding the built-in synonyms"),
    Setting(
        "tag_fields",
        "CAMCUT_TAG_FIELDS",
        "tags,classes",
        names,
        "task data fields read as image-level classes (list or comma string)",
    ),
    Setting(
        "allowed_hosts",
        "CAMCUT_ALLOWED_HOSTS",
        "",
        names,
        "comma list of extra image hosts: 'host', 'host:port', '*.domain' or '*' (any public host)",
    ),
    Setting(
        "max_download_bytes", "CAMCUT_MAX_DOWNLOAD_BYTES", "52428800", integer(1), "largest image download in bytes (50 MiB)"
    ),
    Setting("max_pixels", "CAMCUT_MAX_PIXELS", "40000000", integer(1), "largest decoded image in pixels"),
    Setting(
        "download_timeout",
        "CAMCUT_DOWNLOAD_TIMEOUT",
        "30",
        number(0.1),
        "seconds for one whole image download, redirects included (also the timeout of one Label Studio API call)",
    ),
    Setting("max_redirects", "CAMCUT_MAX_REDIRECTS", "5", integer(0), "redirect hops followed (each re-checked)"),
    Setting(
        "min_class_probability",
        "CAMCUT_MIN_CLASS_PROBABILITY",
        "0.2",
        number(0.0, 1.0),
        "with no prompt, classes the CNN gives at least this probability get a mask",
    ),
    Setting("max_classes", "CAMCUT_MAX_CLASSES", "3", integer(1), "with no prompt, at most this many classes"),
    Setting(
        "min_corrections",
        "CAMCUT_MIN_CORRECTIONS",
        "3",
        integer(1),
        "corrections of a class needed before its threshold is re-chosen",
    ),
    Setting(
        "head_min_corrections",
        "CAMCUT_HEAD_MIN_CORRECTIONS",
        "200",
        integer(1),
        "corrected box objects of a project before a learned head may be served (featcut); below, the training-free model",
    ),
    Setting(
        "adapt_thresholds",
        "CAMCUT_ADAPT_THRESHOLDS",
        "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
        thresholds,
        "candidate t values scored against corrections",
    ),
    Setting(
        "max_inflight",
        "CAMCUT_MAX_INFLIGHT",
        "0",
        integer(0),
        "most batch /predict requests one worker runs at once, plus one slot kept for interactive calls; "
        "more get 503 + Retry-After at once (0: THREADS-1, at least 1)",
    ),
    Setting(
        "cut_threads",
        "CAMCUT_CUT_THREADS",
        "0",
        integer(0),
        "GrabCuts of one request run at once (boxes of a task, a mask and its score); 0: the cores available",
    ),
    Setting(
        "torch_threads",
        "CAMCUT_TORCH_THREADS",
        "1",
        integer(0),
        "torch's intra-op threads in a worker (the CNN pass, featcut's GMMs); 0: torch's default, the cores. "
        "1: the GMMs' tiny ops pay for 2 threads' hand-offs, and on a busy 2-core machine 2 made box mode "
        "1.1x (featcut) to 8x (default) slower (README Speed, session 10)",
    ),
    Setting(
        "max_request_bytes",
        "CAMCUT_MAX_REQUEST_BYTES",
        "16777216",
        integer(1),
        "largest request body in bytes (16 MiB), enforced by the front and the app; more: 413",
    ),
    Setting("max_tasks", "CAMCUT_MAX_TASKS", "100", integer(1), "most tasks in one /predict request; more: 413"),
    Setting(
        "max_boxes",
        "CAMCUT_MAX_BOXES",
        "100",
        integer(1),
        "most boxes (rectangles), or tags, one task may carry; more: that task's error",
    ),
    Setting(
        "tag_work_pixels",
        "CAMCUT_TAG_WORK_PIXELS",
        "4000000",
        integer(1),
        "tags (and no-prompt guesses) of a larger image are cut on a copy downscaled to about this many pixels, "
        "their masks upsampled (bounds memory: 20 tags on 40 MP took 11 GB)",
    ),
    Setting(
        "max_config_bytes",
        "CAMCUT_MAX_CONFIG_BYTES",
        "1048576",
        integer(1),
        "largest labelling config in bytes (1 MiB); more: 400",
    ),
    Setting(
        "webhook_sync",
        "CAMCUT_WEBHOOK_SYNC",
        "0",
        flag,
        "1: score corrections inside the /webhook request (tests); 0: in a background thread",
    ),
    Setting(
        "webhook_secret",
        "CAMCUT_WEBHOOK_SECRET",
        "",
        text,
        "if set, /webhook needs the header X-Camcut-Webhook-Secret with this value (add it to the webhook in "
        "Label Studio's project settings); empty: /webhook is open even with basic auth, as LS sends no credentials",
    ),
    Setting(
        "max_pending_events",
        "CAMCUT_MAX_PENDING_EVENTS",
        "10000",
        integer(1),
        "webhook events kept waiting at most; beyond, /webhook answers 503 + Retry-After",
    ),
    Setting(
        "dask_scheduler",
        "CAMCUT_DASK_SCHEDULER",
        "",
        text,
        "camcut bulk: Dask scheduler address (tcp://host:8786) to predict on that cluster's workers; "
        "empty: local worker processes (--scheduler overrides it)",
    ),
    Setting(
        "bulk_rate",
        "CAMCUT_BULK_RATE",
        "0",
        number(0),
        "camcut bulk: tasks started per second at most (each is one image download and one prediction posted "
        "to Label Studio); 0: no cap (--rate overrides it)",
    ),
)


@dataclass(frozen=True)
class Settings:
    """The parsed configuration. Fields and their order follow SETTINGS (checked at import);
    the defaults live only in the table: build it with :meth:`from_env` (``{}`` for defaults)."""

    bind_host: str
    port: int
    workers: int
    threads: int
    timeout: int
    log_level: str
    front: bool
    header_timeout: float
    body_timeout: float
    max_connections: int
    label_studio_url: str
    label_studio_api_key: str = field(repr=False)
    basic_auth_user: str
    basic_auth_pass: str = field(repr=False)
    model_dir: Path
    database_url: str = field(repr=False)
    engine_config: str
    box_technique: str
    class_technique: str
    weights: str
    label_map: str
    tag_fields: tuple[str, ...]
    allowed_hosts: tuple[str, ...]
    max_download_bytes: int
    max_pixels: int
    download_timeout: float
    max_redirects: int
    min_class_probability: float
    max_classes: int
    min_corrections: int
    head_min_corrections: int
    adapt_thresholds: tuple[float, ...]
    max_inflight: int
    cut_threads: int
    torch_threads: int
    max_request_bytes: int
    max_tasks: int
    max_boxes: int
    tag_work_pixels: int
    max_config_bytes: int
    webhook_sync: bool
    webhook_secret: str = field(repr=False)
    max_pending_events: int
    dask_scheduler: str
    bulk_rate: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values = {s.name: s.parse(s.env, env.get(s.env, s.default).strip()) for s in SETTINGS}
        # the settings whose "0" / empty default depends on another setting or on the machine
        if not env.get("MODEL_DIR", "").strip():
            values["model_dir"] = default_model_dir(env)
        values["max_inflight"] = values["max_inflight"] or max(1, values["threads"] - 1)
        values["cut_threads"] = values["cut_threads"] or len(os.sched_getaffinity(0))
        return cls(**values)

    def __post_init__(self) -> None:
        # Label Studio 1.23.2 sends ML-backend basic auth with requests.HTTPBasicAuth, which
        # encodes str credentials as latin-1 (label_studio/ml/api_connector.py), while clients
        # such as curl send UTF-8: a non-ASCII user or password can never match for both and
        # would lock Label Studio out. Refuse it at start-up with the reason.
        for name, value in (("BASIC_AUTH_USER", self.basic_auth_user), ("BASIC_AUTH_PASS", self.basic_auth_pass)):
            if not value.isascii() or any(not c.isprintable() for c in value):
                raise ConfigError(
                    f"{name} must be printable ASCII: Label Studio sends basic auth latin-1 encoded, "
                    "other clients UTF-8, so non-ASCII credentials cannot match"
                )
        if ":" in self.basic_auth_user:
            raise ConfigError("BASIC_AUTH_USER must not contain ':' (it separates user and password in basic auth)")

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        return (self.basic_auth_user, self.basic_auth_pass) if self.basic_auth_user else None

    @property
    def bind(self) -> str:
        """gunicorn's ``bind``: ``host:port``."""
        return bind_address(self.bind_host, self.port)

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every credential that must never reach a log line, an error or a response: the API key,
        the basic-auth password and the access tokens obtained from a personal access token so far.
        Every redacting logger and error path reads this one list (it grows as tokens refresh)."""
        db_pass = urlsplit(self.database_url).password if self.database_url else None
        return tuple(
            s for s in (self.label_studio_api_key, self.basic_auth_pass, self.webhook_secret, db_pass, *runtime_secrets()) if s
        )


if [f.name for f in fields(Settings)] != [s.name for s in SETTINGS]:  # pragma: no cover - a programming error
    raise AssertionError("backend.config: Settings fields and SETTINGS rows differ")


def read_setting(env_name: str, env: Mapping[str, str] | None = None) -> Any:
    """One setting alone (gunicorn_conf reads the bind address without the backend's other settings)."""
    env = os.environ if env is None else env
    row = next(s for s in SETTINGS if s.env == env_name)
    return row.parse(row.env, env.get(row.env, row.default).strip())


def bind_address(host: str, port: int) -> str:
    """``host:port`` as gunicorn takes it, an IPv6 address in brackets."""
    return f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"


# ------------------------------------------------------------------------------------ listings
def describe() -> str:
    """The plain-text listing of ``python -m backend.config``."""
    width = max(len(s.env) for s in SETTINGS)
    return "\n".join(f"{s.env:<{width}}  default {s.default!r:<14} {s.help}" for s in SETTINGS)


def markdown_table() -> str:
    """The README's configuration table (between its ``<!-- settings -->`` markers)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "(empty)"
        rows.append(f"| `{s.env}` | {default} | {s.help.replace('|', '/')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m backend.config", description="List every setting of the camcut backend.")
    p.add_argument("--markdown", action="store_true", help="print the README's configuration table instead")
    args = p.parse_args(argv)
    print(markdown_table() if args.markdown else describe())


if __name__ == "__main__":
    main()
