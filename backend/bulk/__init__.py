"""Pre-annotate a whole Label Studio project with camcut, resumably (``python -m backend.bulk``).

``cli.py`` the command line and its documentation, ``run.py`` the run loop and summary,
``worker.py`` one task (predict + post) and the worker processes, ``state.py`` the state file,
``logs.py`` redacted logging through the progress bar.
"""

from .cli import build_parser, main
from .errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError
from .run import BulkRun, Options, Summary, has_our_prediction
from .state import StateFile
from .worker import Outcome, predict_and_post

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "BulkRun", "Options", "Outcome", "StateFile", "Summary",
           "UsageError", "build_parser", "has_our_prediction", "main", "predict_and_post"]
