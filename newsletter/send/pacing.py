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

    def now(self) -> float:
        """This bucket's clock."""
        return self._clock()

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


class AdaptiveRate(TokenBucket):
    """A token bucket whose rate follows the provider's back-pressure (AIMD, as TCP does).

    Time is cut into rounds of ``ROUND`` seconds (providers count their rate per second). A
    throttle that arrives once the current round is over closes it and lowers the rate by half
    the share of calls that were throttled in it (multiplicative decrease: all throttled halves
    it, one in ten takes 5 % off); a throttle within a round counts for the next decision only.
    Each success adds ``step / rate`` messages/s, so the rate climbs by about ``step`` per second
    of success (additive increase) up to ``ceiling`` — the rate asked for or the account's max.
    Unpaced (``ceiling`` None) until the first throttle: then the rate achieved over the last
    second becomes the ceiling. Never below ``floor``. ``lowest``, ``decreases`` and
    ``last_success`` tell what happened.

    Several processes sending one send share its rate: ``set_share(n)`` makes this bucket take
    1/n of the rate asked (ceiling and current rate scaled, so a lowered rate stays as lowered);
    ``lowest`` is then counted for the whole send (this process's rate × n).
    """

    ROUND = 1.0

    def __init__(self, ceiling: float | None, *, step: float | None = None, floor: float | None = None,
                 burst: int = 1, clock: Callable[[], float] = time.monotonic):
        super().__init__(ceiling, burst=burst, clock=clock)
        self.ceiling = ceiling
        self.asked = ceiling  # the whole send's ceiling, before sharing
        self.share = 1  # processes sharing it (see set_share)
        self._generation = 0  # bumped when the share goes down (see acquire)
        self._step, self._floor = step, floor
        self.lowest: float | None = ceiling
        self.decreases = 0
        self.last_success: float | None = None
        self._round = clock()
        self._answered = self._refused = 0  # in the current round
        self._recent: list[float] = []  # while unpaced: when the last calls were let out

    def reserve(self) -> float:
        wait = super().reserve()
        if self.rate is None:
            with self._lock:
                self._recent.append(self._clock())
                if len(self._recent) > 4096:
                    del self._recent[:2048]
        return wait

    def _bounds(self) -> tuple[float, float]:
        ceiling = self.ceiling or 1.0
        step = self._step if self._step is not None else max(1.0, ceiling / 20)
        floor = self._floor if self._floor is not None else max(0.2, ceiling / 500)
        return step, floor

    def throttled(self) -> bool:
        """A call was throttled. True when this closed a round and lowered the rate."""
        with self._lock:
            self._answered += 1
            self._refused += 1
            now = self._clock()
            if now - self._round < self.ROUND and self.decreases:
                return False
            if self.rate is None:  # first back-pressure on an unpaced send: what it was achieving
                self.ceiling = max(1.0, float(sum(1 for t in self._recent if now - t <= 1.0)))
                self.rate = self.ceiling
                self._recent = []
            share = self._refused / self._answered
            _, floor = self._bounds()
            self.rate = max(floor, self.rate * (1.0 - share / 2))
            total = self.rate * self.share
            self.lowest = total if self.lowest is None else min(self.lowest, total)
            self.decreases += 1
            self._round, self._answered, self._refused = now, 0, 0
            return True

    def succeeded(self) -> None:
        with self._lock:
            self.last_success = self._clock()
            self._answered += 1
            if self.rate is None or self.ceiling is None:
                return
            step, _ = self._bounds()
            self.rate = min(self.ceiling, self.rate + step / self.rate)

    def set_share(self, workers: int) -> bool:
        """Take 1/``workers`` of the asked rate (``workers`` processes send this send); True when
        the share changed. Unpaced (nothing asked), there is nothing to share."""
        workers = max(1, int(workers))
        with self._lock:
            if workers == self.share:
                return False
            old, self.share = self.share, workers
            if self.asked is None or self.rate is None or self.ceiling is None:
                return True
            self.ceiling = self.asked / workers
            before, self.rate = self.rate, min(self.ceiling, self.rate * old / workers)
            if self.rate < before:  # slots reserved at the old pace are void: their threads reserve
                self._generation += 1  # again (``acquire``), from a schedule at the new pace
                self._next = self._clock() + 1.0 / self.rate
            return True

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """As ``TokenBucket.acquire``; a slot reserved before the share went down is taken again."""
        while True:
            generation = self._generation
            wait = self.reserve()
            if wait > 0:
                if stop is not None:
                    if stop.wait(wait):
                        return False
                else:
                    time.sleep(wait)
            if stop is not None and stop.is_set():
                return False
            if generation == self._generation:
                return True
