"""Keeping credentials out of log lines, errors and responses.

:attr:`backend.config.Settings.secrets` is the one list of secrets (API key, basic-auth
password, and the access tokens registered here as they are obtained); every redacting logger
gets a :class:`RedactingFilter` reading that list (:func:`install_filter`). On top of the listed
values, Authorization headers, ``Token``/``Bearer`` values and ``token=`` / signature URL
parameters are masked by pattern.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Callable, Iterable, Union

_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)(token|bearer|basic)?\s*[^\s'\",}]+"), r"\1\2 ***"),
    (re.compile(r"(?i)\b(token|bearer)\s+[A-Za-z0-9._\-+/=]{8,}"), r"\1 ***"),
    (re.compile(r"(?i)([?&](?:access_)?token=|[?&]refresh=|[?&]sig=|[?&]signature=|[?&]x-amz-signature=)[^&\s'\"]+"), r"\1***"),
    (re.compile(r"(?i)(['\"](?:access_token|refresh|access|api_key|token)['\"]\s*:\s*['\"])[^'\"]+"), r"\1***"),
)

# A list of secrets, or a function returning the current list (tokens appear at run time).
SecretSource = Union[tuple[str, ...], Callable[[], tuple[str, ...]]]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Remove credentials from a log line: the given secrets, Authorization values, tokens, token= parameters."""
    out = str(text)
    for s in secrets:
        if s and len(s) >= 6:
            out = out.replace(s, "***")
    for pat, repl in _REDACTIONS:
        out = pat.sub(repl, out)
    return out


class RedactingFilter(logging.Filter):
    """Logging filter that redacts every record (message and arguments) before it is emitted."""

    def __init__(self, secrets: SecretSource = ()) -> None:
        super().__init__()
        self._secrets = secrets

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._secrets() if callable(self._secrets) else self._secrets

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # malformed %-args: leave the record alone
            return True
        record.msg = redact(msg, self.secrets)
        record.args = None
        return True


def install_filter(flt: RedactingFilter, loggers: Iterable[str], handlers: Iterable[logging.Handler] = ()) -> None:
    """Put ``flt`` on these loggers and handlers, replacing a RedactingFilter installed before."""
    targets: list[logging.Filterer] = [logging.getLogger(name) for name in loggers] + list(handlers)
    for t in targets:
        t.filters = [f for f in t.filters if not isinstance(f, RedactingFilter)] + [flt]


# ------------------------------------------------------------------------------------ run-time secrets
_lock = threading.Lock()
_runtime: list[str] = []
_KEEP = 8  # an access token lives ~5 minutes: the last few cover every line still in flight


def register_secret(secret: str) -> None:
    """Remember ``secret`` (e.g. a fresh JWT access token) as something never to log."""
    if not secret:
        return
    with _lock:
        if secret not in _runtime:
            _runtime.append(secret)
            del _runtime[:-_KEEP]


def runtime_secrets() -> tuple[str, ...]:
    with _lock:
        return tuple(_runtime)
