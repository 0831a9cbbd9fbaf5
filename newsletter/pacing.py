"""Pacing: a token bucket shared by the sending threads, and the retry backoff.

The bucket hands out send slots at ``rate`` per second (``None``: no limit). It is a virtual
schedule (GCRA): each slot is 1/rate after the previous one, so sleeping late never makes later
slots earlier — the achieved rate converges on the target from below and never exceeds it by more
than the ``burst`` allowance.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate: float | None, *, burst: int = 1,
                 clock: Callable[[], float] = time.monotonic):
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive (or None for no limit)")
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._next = clock()

    def reserve(self) -> float:
        """Take the next slot; return how long to wait for it (0 when it is due)."""
        if self.rate is None:
            return 0.0
        interval = 1.0 / self.rate
        with self._lock:
            now = self._clock()
            # An idle bucket refills up to ``burst`` slots, no more.
            earliest = now - (self.burst - 1) * interval
            slot = max(self._next, earliest)
            self._next = slot + interval
        return max(0.0, slot - now)

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait for a slot. Returns False (without sending) when ``stop`` is set meanwhile."""
        wait = self.reserve()
        if wait > 0:
            if stop is not None:
                return not stop.wait(wait)
            time.sleep(wait)
        return not (stop is not None and stop.is_set())


def backoff(attempt: int, *, base: float = 0.5, cap: float = 20.0,
            rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, …): exponential, full jitter."""
    return rng() * min(cap, base * (2 ** (attempt - 1)))
