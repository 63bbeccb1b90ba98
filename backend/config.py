"""Every setting of the camcut Label Studio ML backend, read from environment variables.

Running it
----------
``make run`` (or ``gunicorn --config backend/gunicorn_conf.py backend.wsgi:app``) serves the
Label Studio ML backend protocol on ``0.0.0.0:$PORT`` (default 9090). In Label Studio open
*Project settings -> Model -> Connect model* and enter the backend URL (tick *Interactive
preannotations* for the interactive mode). The project's labelling config must have a
``<BrushLabels>`` tag on an ``<Image>``; ``<RectangleLabels>`` and ``<Choices>`` tags on the
same image are read as prompts.

Endpoints: ``GET /`` and ``GET /health`` (always open), ``POST /setup``, ``POST /predict``,
``POST /webhook``, ``GET /metrics`` (basic auth if ``BASIC_AUTH_USER`` is set).

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
LS posts ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED`` to ``/webhook``. Each submitted brush
mask is compared with what was predicted for that task (kept in ``MODEL_DIR``), every
candidate threshold ``t`` of the configured variant is scored against the correction
(``model/adapt.py``) and, once a class has ``CAMCUT_MIN_CORRECTIONS`` corrections in a
project, its best-average ``t`` is used for that project and the model version changes.
Statistics live in ``MODEL_DIR/camcut.sqlite3`` (survive restarts; an annotation id +
``updated_at`` is counted once).

Image access and safety
-----------------------
``/data/upload/...`` and ``/data/local-files/?d=...`` are fetched from ``LABEL_STUDIO_URL``
with the API key; ``s3://``, ``gs://``, ``azure-blob://`` URIs are presigned through LS
(``/tasks/{id}/presign/?fileuri=<base64>``); plain ``http(s)`` URLs must be on LS's host or
in ``CAMCUT_ALLOWED_HOSTS``. A JWT-shaped key is a personal access token (refreshed at
``/api/token/refresh`` into a ``Bearer`` token); anything else is a legacy ``Token``. The
key is only ever sent to LS's own host. The ``hostname`` / ``access_token`` that LS sends in
``/setup`` are deliberately ignored: the trusted host and key come from the environment only. Redirects are followed by hand and re-checked; hosts
matched by a wildcard must resolve to public addresses; size, pixel count and time are
bounded. Authorization headers and ``token=`` URL parameters are redacted from logs.
Residual risk: a wildcard-matched host's DNS answer may change between the check and the
connection (DNS rebinding); list exact hosts when that matters.

Environment variables
---------------------
See ``ENV_DOCS`` below (name -> (default, meaning)); ``python -m backend.config`` prints them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

ENV_DOCS: dict[str, tuple[str, str]] = {
    "PORT": ("9090", "port gunicorn binds on 0.0.0.0"),
    "WORKERS": ("1", "gunicorn worker processes (each loads the CNN once, ~5 MB weights)"),
    "THREADS": ("4", "threads per worker (one Segmenter per request; the CNN is shared and locked)"),
    "TIMEOUT": ("300", "gunicorn worker timeout in seconds (a batch /predict can be long on CPU)"),
    "LOG_LEVEL": ("INFO", "DEBUG | INFO | WARNING | ERROR"),
    "LABEL_STUDIO_URL": ("", "base URL of Label Studio, e.g. http://label-studio:8080; its host is trusted for images"),
    "LABEL_STUDIO_API_KEY": ("", "legacy API token or personal access token (JWT refresh token); sent only to LABEL_STUDIO_URL"),
    "BASIC_AUTH_USER": ("", "if set (with BASIC_AUTH_PASS), every endpoint but / and /health needs HTTP basic auth"),
    "BASIC_AUTH_PASS": ("", "basic auth password"),
    "MODEL_DIR": ("./model_dir", "writable directory for the SQLite statistics and per-task prediction records"),
    "CAMCUT_CONFIG": ("default", "engine configuration: default (fast, see README Results), quality (slower, better boxes) or reference (the report's pipeline)"),
    "CAMCUT_BOX_TECHNIQUE": ("", "technique for boxes, e.g. 'fpf 0.6', 'grabcut'; empty: the engine config's"),
    "CAMCUT_CLASS_TECHNIQUE": ("", "technique for tags / guessed classes, e.g. 'pfpb 0.3'; empty: the engine config's"),
    "CAMCUT_WEIGHTS": ("", "SqueezeNet weights path; empty: the packaged weights"),
    "CAMCUT_LABEL_MAP": ("", "JSON file {label: voc_class or null} overriding the built-in synonyms"),
    "CAMCUT_TAG_FIELDS": ("tags,classes", "task data fields read as image-level classes (list or comma string)"),
    "CAMCUT_ALLOWED_HOSTS": ("", "comma list of extra image hosts: 'host', 'host:port', '*.domain' or '*' (any public host)"),
    "CAMCUT_MAX_DOWNLOAD_BYTES": ("52428800", "largest image download in bytes (50 MiB)"),
    "CAMCUT_MAX_PIXELS": ("40000000", "largest decoded image in pixels"),
    "CAMCUT_DOWNLOAD_TIMEOUT": ("30", "seconds for one whole image download, redirects included"),
    "CAMCUT_MAX_REDIRECTS": ("5", "redirect hops followed (each re-checked)"),
    "CAMCUT_MIN_CLASS_PROBABILITY": ("0.2", "with no prompt, classes the CNN gives at least this probability get a mask"),
    "CAMCUT_MAX_CLASSES": ("3", "with no prompt, at most this many classes"),
    "CAMCUT_MIN_CORRECTIONS": ("3", "corrections of a class needed before its threshold is re-chosen"),
    "CAMCUT_ADAPT_THRESHOLDS": ("0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", "candidate t values scored against corrections"),
    "CAMCUT_MAX_INFLIGHT": ("0", "most batch /predict requests one worker runs at once, plus one slot kept for interactive calls; more get 503 + Retry-After at once (0: THREADS-1, at least 1)"),
    "CAMCUT_CUT_THREADS": ("0", "GrabCuts of one request run at once (boxes of a task, a mask and its score); 0: the cores available"),
    "CAMCUT_WEBHOOK_SYNC": ("0", "1: score corrections inside the /webhook request (tests); 0: in a background thread"),
}


class ConfigError(ValueError):
    """An environment variable has an unusable value."""


def _get(env: Mapping[str, str], name: str) -> str:
    return env.get(name, ENV_DOCS[name][0]).strip()


def _int(env: Mapping[str, str], name: str, minimum: int = 0) -> int:
    raw = _get(env, name)
    try:
        v = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if v < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {v}")
    return v


def _float(env: Mapping[str, str], name: str, lo: float = 0.0, hi: float = float("inf")) -> float:
    raw = _get(env, name)
    try:
        v = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not lo <= v <= hi:
        raise ConfigError(f"{name} must be in [{lo}, {hi}], got {v}")
    return v


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in _get(env, name).split(",") if p.strip())


@dataclass(frozen=True)
class Settings:
    label_studio_url: str = ""
    label_studio_api_key: str = field(default="", repr=False)
    basic_auth_user: str = ""
    basic_auth_pass: str = field(default="", repr=False)
    model_dir: Path = Path("./model_dir")
    engine_config: str = "default"
    box_technique: str = ""
    class_technique: str = ""
    weights: str = ""
    label_map: str = ""
    tag_fields: tuple[str, ...] = ("tags", "classes")
    allowed_hosts: tuple[str, ...] = ()
    max_download_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 40_000_000
    download_timeout: float = 30.0
    max_redirects: int = 5
    min_class_probability: float = 0.2
    max_classes: int = 3
    min_corrections: int = 3
    adapt_thresholds: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    webhook_sync: bool = False
    max_inflight: int = 1
    cut_threads: int = 1
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        ts_raw = _list(env, "CAMCUT_ADAPT_THRESHOLDS")
        try:
            ts = tuple(sorted({float(t) for t in ts_raw}))
        except ValueError:
            raise ConfigError(f"CAMCUT_ADAPT_THRESHOLDS must be numbers, got {ts_raw}") from None
        if not ts or not all(0.0 < t < 1.0 for t in ts):
            raise ConfigError("CAMCUT_ADAPT_THRESHOLDS must be numbers strictly between 0 and 1")
        level = _get(env, "LOG_LEVEL").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
        return cls(
            label_studio_url=_get(env, "LABEL_STUDIO_URL").rstrip("/"),
            label_studio_api_key=_get(env, "LABEL_STUDIO_API_KEY"),
            basic_auth_user=_get(env, "BASIC_AUTH_USER"),
            basic_auth_pass=_get(env, "BASIC_AUTH_PASS"),
            model_dir=Path(_get(env, "MODEL_DIR")),
            engine_config=_get(env, "CAMCUT_CONFIG"),
            box_technique=_get(env, "CAMCUT_BOX_TECHNIQUE"),
            class_technique=_get(env, "CAMCUT_CLASS_TECHNIQUE"),
            weights=_get(env, "CAMCUT_WEIGHTS"),
            label_map=_get(env, "CAMCUT_LABEL_MAP"),
            tag_fields=_list(env, "CAMCUT_TAG_FIELDS"),
            allowed_hosts=_list(env, "CAMCUT_ALLOWED_HOSTS"),
            max_download_bytes=_int(env, "CAMCUT_MAX_DOWNLOAD_BYTES", 1),
            max_pixels=_int(env, "CAMCUT_MAX_PIXELS", 1),
            download_timeout=_float(env, "CAMCUT_DOWNLOAD_TIMEOUT", 0.1),
            max_redirects=_int(env, "CAMCUT_MAX_REDIRECTS", 0),
            min_class_probability=_float(env, "CAMCUT_MIN_CLASS_PROBABILITY", 0.0, 1.0),
            max_classes=_int(env, "CAMCUT_MAX_CLASSES", 1),
            min_corrections=_int(env, "CAMCUT_MIN_CORRECTIONS", 1),
            adapt_thresholds=ts,
            webhook_sync=_get(env, "CAMCUT_WEBHOOK_SYNC").lower() in ("1", "true", "yes", "on"),
            max_inflight=_int(env, "CAMCUT_MAX_INFLIGHT", 0) or max(1, _int(env, "THREADS", 1) - 1),
            cut_threads=_int(env, "CAMCUT_CUT_THREADS", 0) or len(os.sched_getaffinity(0)),
            log_level=level,
        )

    def __post_init__(self) -> None:
        # Label Studio 1.23.2 sends ML-backend basic auth with requests.HTTPBasicAuth, which
        # encodes str credentials as latin-1 (label_studio/ml/api_connector.py), while clients
        # such as curl send UTF-8: a non-ASCII user or password can never match for both and
        # would lock Label Studio out. Refuse it at start-up with the reason.
        for name, value in (("BASIC_AUTH_USER", self.basic_auth_user), ("BASIC_AUTH_PASS", self.basic_auth_pass)):
            if not value.isascii() or any(not c.isprintable() for c in value):
                raise ConfigError(f"{name} must be printable ASCII: Label Studio sends basic auth latin-1 encoded, "
                                  "other clients UTF-8, so non-ASCII credentials cannot match")
        if ":" in self.basic_auth_user:
            raise ConfigError("BASIC_AUTH_USER must not contain ':' (it separates user and password in basic auth)")

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        return (self.basic_auth_user, self.basic_auth_pass) if self.basic_auth_user else None


def describe() -> str:
    width = max(map(len, ENV_DOCS))
    return "\n".join(f"{k:<{width}}  default {v[0]!r:<14} {v[1]}" for k, v in ENV_DOCS.items())


if __name__ == "__main__":
    print(describe())
