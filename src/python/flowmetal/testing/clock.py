"""A virtual clock: time moves only when the test harness moves it.

It implements flowmetal.clock.Clock, so the gate, the store (leases) and the
lifecycle take it in place of the system clock. Pauses take no real time: `sleep`
and `wait` move the clock instead of waiting. Randomness is seeded, so run ids,
uuid() and random() repeat from one test session to the next.
"""

import random as _random
import uuid as _uuid

from flowmetal.clock import Clock

# 2026-01-05 00:00:00 UTC, a Monday: where every test's clock starts.
EPOCH = 1767571200.0


class VirtualClock(Clock):
    def __init__(self, start=EPOCH, seed=0):
        self.t = float(start)
        self._rng = _random.Random(seed)

    def now(self):
        return self.t

    def now_ns(self):
        return int(round(self.t * 1_000_000_000))

    def monotonic(self):
        return self.t

    def set(self, t):
        """Move to `t` (never backwards)."""
        self.t = max(self.t, float(t))

    def advance(self, seconds):
        self.set(self.t + max(0.0, seconds))

    def sleep(self, seconds):
        self.advance(seconds)

    def wait(self, event, timeout):
        if event.is_set():
            return True
        if timeout is not None:
            self.advance(timeout)
        return event.is_set()

    def random(self):
        return self._rng.random()

    def uuid(self):
        return str(_uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def token(self, n=8):
        return "".join(self._rng.choice("0123456789abcdef") for _ in range(n))
