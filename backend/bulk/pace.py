"""Back-pressure towards Label Studio: a token bucket on the tasks a bulk run starts per second.

Each started task costs Label Studio one image download and one ``POST /api/predictions/``, so
a cap on starts is a cap on both. A bucket of one token (no bursts) is enough for a cap that is
about the API, not about latency; ``rate <= 0`` means no cap.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class RateLimit:
    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.clock = clock
        self.next_at = clock()

    def delay(self) -> float:
        """Seconds until the next task may start (0: now)."""
        return 0.0 if self.rate <= 0 else max(0.0, self.next_at - self.clock())

    def take(self) -> None:
        """One task starts now (call when :meth:`delay` is 0)."""
        if self.rate > 0:
            self.next_at = max(self.next_at, self.clock()) + 1.0 / self.rate

    def acquire(self) -> None:
        """Wait for the next start (pacing, not synchronisation), then take it."""
        wait = self.delay()
        if wait > 0:
            time.sleep(wait)
        self.take()
