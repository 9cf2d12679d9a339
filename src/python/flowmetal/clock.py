"""Time and randomness, injected. The only module that reads wall time.

Everything that needs the time, a pause, or a random number takes a `Clock`:
the worker loop and its heartbeat, leases (stamped by the store with its
clock), the gate's short in-place waits, the scheduler, and the values of the
`now()`, `random()` and `uuid()` builtins. `SYSTEM` is the real one; the test
mode's virtual clock replaces it by implementing the same methods.

- `now()`: epoch seconds (float); `now_ns()`: epoch nanoseconds (int).
- `monotonic()`: seconds for measuring elapsed time, never stepped back.
- `sleep(seconds)`: pause the calling thread.
- `wait(event, timeout)`: wait for a `threading.Event` at most `timeout`
  seconds; returns whether it is set (as `Event.wait`). Every wait of the
  engine that a virtual clock must be able to skip goes through this.
- `random()`: a float in [0, 1); `uuid()`: a random UUID (version 4) as text;
  `token(n)`: n random hex digits (owner names).
"""

import random as _random
import time
import uuid as _uuid


class Clock:
    """The interface (and the real implementation's shape). Subclasses override all of it."""

    def now(self) -> float:
        raise NotImplementedError

    def now_ns(self) -> int:
        raise NotImplementedError

    def monotonic(self) -> float:
        raise NotImplementedError

    def sleep(self, seconds: float) -> None:
        raise NotImplementedError

    def wait(self, event, timeout: float | None) -> bool:
        raise NotImplementedError

    def random(self) -> float:
        raise NotImplementedError

    def uuid(self) -> str:
        raise NotImplementedError

    def token(self, n: int = 8) -> str:
        return "".join("0123456789abcdef"[int(self.random() * 16)] for _ in range(n))


class SystemClock(Clock):
    """Wall time, real pauses, and the operating system's randomness."""

    def __init__(self):
        self._rng = _random.SystemRandom()

    def now(self):
        return time.time()

    def now_ns(self):
        return time.time_ns()

    def monotonic(self):
        return time.monotonic()

    def sleep(self, seconds):
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, event, timeout):
        return event.wait(None if timeout is None else max(0.0, timeout))

    def random(self):
        return self._rng.random()

    def uuid(self):
        return str(_uuid.uuid4())

    def token(self, n=8):
        return _uuid.uuid4().hex[:n]


SYSTEM = SystemClock()
