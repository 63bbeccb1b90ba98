"""Exit codes of ``camcut bulk`` and the error that means "usage or configuration problem"."""

from __future__ import annotations

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """A usage / configuration problem: exit code 2 with this message."""
