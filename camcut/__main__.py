"""``python -m camcut`` = ``camcut``."""

import sys

from .cli import main

sys.exit(main())
