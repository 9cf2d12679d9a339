"""Warm waits: a worker keeps runs that suspend alive in memory (SPEC section 3, as
Temporal's sticky cache), and continues them in place when their wait ends.

Without it, a run that waits is stopped: its evaluation unwinds, and the next
execution replays the whole journal up to the wait. A run that waits K times
then replays K times, O(journal²). With it, the run's evaluation thread stays
blocked inside the gate at the wait (it is *parked*); the run is `waiting` in
the database exactly as before (same row, same wake time, no owner, no lease),
so every other process sees nothing different. When the worker claims that run
again (its wake time came, a signal or a child's end made it due) and finds it
parked here, it hands the claimed row to the parked thread, which asks the wait
again, as replay would at that journal position, and goes on without replaying.

Fallbacks, each to replay with the same result (the journal is the same):

- long sleeps: a wait that will not end for WARM_HORIZON seconds is not parked.
- eviction: at most `limit` runs are parked (FLOWMETAL_WARM, default
  DEFAULT_WARM; 0 disables); parking one more evicts the least recently parked.
  An evicted thread unwinds without writing anything; the run stays `waiting`.
- another execution in between (another worker took the run, a crash of ours
  before it is claimed again...): the claim's `executions` count is not the one
  after the parked execution's, so the parked state is stale; it is evicted and
  the run is replayed.
- a crash: the parked runs are `waiting` rows; whoever claims them replays them.
- the worker stops (drain, shutdown, the end of `flowmetal run`): every parked
  run is evicted.

Memory: a parked run holds its evaluation thread (a blocked OS thread whose
stack pages were touched by the Starlark evaluation), its Starlark heap (the
module, the prelude's frozen values are shared), its gate (the journal entries
read or written, as dicts) and no database connection (the SQLite connection of
the thread is closed while it is parked and opened again on resume).
bench/bench_waiting.py measures it: see doc/architecture.md, "Warm waits".
"""

import os
import threading
from collections import OrderedDict

from flowmetal.errors import UserError

DEFAULT_WARM = 256
# A wait whose wake time is further away than this (seconds) is not parked: a run asleep for an
# hour costs one row and no thread, as without warm waits. Waits for an event (a signal, a
# child, a task) have no wake time, or their timeout's, and are parked.
WARM_HORIZON = 60.0


def warm_limit(value=None):
    """How many suspended runs a worker keeps parked: `value`, else FLOWMETAL_WARM, else
    DEFAULT_WARM (0: warm waits off)."""
    if value is None:
        text = os.environ.get("FLOWMETAL_WARM")
        if not text:
            return DEFAULT_WARM
        try:
            value = int(text)
        except ValueError:
            raise UserError(f"FLOWMETAL_WARM={text!r}: expected a number of runs (0 disables warm waits)") from None
    if value < 0:
        raise UserError(f"warm runs: expected a number >= 0, got {value}")
    return value


class Evicted:
    """The stop reason of a parked execution sent away: the run stays `waiting`, nothing is written."""


class Parked:
    """One execution blocked at a wait: `resume(row)` continues it, `evict()` ends it."""

    __slots__ = ("execution", "executions", "event", "row")

    def __init__(self, execution):
        self.execution = execution
        self.executions = execution.run["executions"]  # the claim that started (or resumed) it
        self.event = threading.Event()
        self.row = None

    def fresh(self, run):
        """Whether claiming `run` is the very next execution after this one."""
        return run["executions"] == self.executions + 1

    def resume(self, run):
        self.row = run
        self.event.set()

    def evict(self):
        self.row = None
        self.event.set()


class WarmRuns:
    """The parked runs of one worker, least recently parked first. Every method is called
    under the worker's lock."""

    def __init__(self, limit):
        self.limit = limit
        self.parked = OrderedDict()  # run id -> Parked

    def __len__(self):
        return len(self.parked)

    def add(self, parked):
        old = self.parked.pop(parked.execution.run.id, None)
        if old is not None:
            old.evict()
        self.parked[parked.execution.run.id] = parked
        while len(self.parked) > self.limit:
            _, oldest = self.parked.popitem(last=False)
            oldest.evict()

    def discard(self, parked):
        if self.parked.get(parked.execution.run.id) is parked:
            del self.parked[parked.execution.run.id]

    def take(self, run_id):
        return self.parked.pop(run_id, None)

    def evict_all(self):
        while self.parked:
            _, parked = self.parked.popitem(last=False)
            parked.evict()
