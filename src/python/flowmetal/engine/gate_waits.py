"""The gate's waits: `sleep`, retry delays, `wait_signal`, `wait` (children).

A wait records what it waits for and its deadline in its journal entry. When
what it waits for has not happened, the gate suspends the run
(`Gate._suspend`): the evaluation stops and a later execution replays up to
the wait and asks again, or, with warm waits (engine/warm.py), the thread
parks and asks again in place when the run is claimed again. Each wait is
therefore a loop: ask, suspend, ask again. A wait of at most INLINE_WAIT
seconds is waited in place.
"""

import json

from flowmetal.codec import loads
from flowmetal.engine.effects.registry import ChildrenWait, SignalWait, Timer
from flowmetal.model import WaitingFor
from flowmetal.store.base import ENDED

# A wait whose remaining time is at most this is waited in place instead of suspending.
INLINE_WAIT = 1.0


class Waits:
    """Mixed into Gate: the wait effects (they use the gate's journal methods)."""

    # --- waits ----------------------------------------------------------------

    def _wait(self, eff, args):
        spec = eff.perform(args, self._pure_ctx)
        if isinstance(spec, Timer):
            return self._timer(eff.name, args, spec.seconds, eff)
        if isinstance(spec, SignalWait):
            return self._wait_signal(eff, args, spec)
        if isinstance(spec, ChildrenWait):
            return self._wait_children(eff, args, spec)
        raise TypeError(f"{eff.name}: a wait effect returned {spec!r}")

    def _wait_until(self, until):
        """Wait in place when the wait is short, else suspend. Returns when `until` has passed."""
        remaining = until - self.clock.now()
        if remaining > INLINE_WAIT:
            return False
        if remaining > 0:
            self.clock.wait(self.cancel, remaining)
            self._check_stop()
        return True

    def _timer(self, name, args, seconds, eff=None):
        seq, rec = self._next(name, args, eff)
        if "_new" in rec:
            until = self.clock.now() + seconds
            rec = self._record(seq, name, rec, "started", data={"until": until})
        elif rec["status"] != "started":
            return None
        until = loads(rec["data"])["until"]
        while not self._wait_until(until):
            self._suspend(WaitingFor(kind="timer", builtin=name, until=until), until)
        self._complete(seq, None)
        return None

    def _open_wait(self, eff, args, timeout, data=None):
        """The journal position of a wait with an optional `timeout`.

        Returns (seq, done, value, deadline): `done` with the recorded value when the
        wait already ended; else the deadline (None: no timeout), recorded on first call."""
        seq, rec = self._next(eff.name, args, eff)
        if "_new" in rec:
            deadline = None if timeout is None else self.clock.now() + timeout
            self._record(seq, eff.name, rec, "started", data={**(data or {}), "deadline": deadline})
            return seq, False, None, deadline
        if rec["status"] != "started":
            return seq, True, self._decode(rec), None
        return seq, False, None, loads(rec["data"])["deadline"]

    def _wait_signal(self, eff, args, spec):
        seq, done, value, deadline = self._open_wait(eff, args, spec.timeout)
        if done:
            return value
        while True:
            with self._transaction():
                signal = self.store.take_signal(self.run_id, spec.name, seq)
                if signal is not None:
                    payload = json.loads(signal["payload"])
                    self._complete(seq, payload)
                    return payload
            if deadline is not None and self._wait_until(deadline):
                self._complete(seq, None)
                return None
            self._suspend(WaitingFor(kind="signal", name=spec.name, until=deadline), deadline)

    def _wait_children(self, eff, args, spec):
        """Every child ended (or, with `any`, one): the results in handle order; children still
        going show their state (pending, running, waiting) with ok False and no value."""
        seq, done, value, deadline = self._open_wait(eff, args, spec.timeout)
        if done:
            return value
        while True:
            results = self.hooks.child_results(self, list(spec.handles))
            pending = [r["id"] for r in results if r["state"] not in ENDED]
            timed_out = deadline is not None and self.clock.now() >= deadline
            enough = not pending or (spec.any and len(pending) < len(results))
            if enough or timed_out:
                break
            self._suspend(WaitingFor(kind="children", runs=tuple(pending), any=spec.any, until=deadline), deadline)
        value = [{k: r[k] for k in ("error", "ok", "state", "value")} for r in results]  # replay's order
        self._complete(seq, value)
        return value
