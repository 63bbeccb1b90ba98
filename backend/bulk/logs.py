"""Logging of a bulk run: redacted, and printed through tqdm so that it does not break the bar."""

from __future__ import annotations

import logging
import sys

from ..config import Settings
from ..redaction import RedactingFilter, install_filter

REDACTED_LOGGERS = ("backend", "backend.bulk", "backend.model", "backend.fetch", "urllib3")


class TqdmHandler(logging.Handler):
    """Log lines printed through tqdm (so they do not break the progress bar) on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover
            self.handleError(record)


def configure_logging(settings: Settings, level: str | None = None) -> None:
    flt = RedactingFilter(lambda: settings.secrets)
    install_filter(flt, REDACTED_LOGGERS)
    lg = logging.getLogger("backend")
    lg.handlers = [h for h in lg.handlers if not isinstance(h, TqdmHandler)]
    h = TqdmHandler()
    h.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    h.addFilter(flt)
    lg.addHandler(h)
    lg.setLevel(level or settings.log_level)
