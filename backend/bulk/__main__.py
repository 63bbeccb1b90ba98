"""``python -m backend.bulk`` (= ``camcut bulk``): see backend/bulk/cli.py."""

import signal
import sys

from .cli import main, sigterm_as_interrupt

if __name__ == "__main__":
    signal.signal(signal.SIGTERM, sigterm_as_interrupt)
    sys.exit(main())
