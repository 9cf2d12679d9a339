"""`Scheduler`: the store-backed core of `flowmetal schedule`.

`reconcile(specs, now)` makes the `schedules` table agree with what the
files declare (flowmetal.schedule.reconcile); `tick(now)` fires what is due at
`now` (flowmetal.schedule.fire) and follows up on what ended
(flowmetal.schedule.outcomes). Time is passed in: nothing here reads the wall
clock or sleeps, so tests run months of schedule time in seconds. It only
*creates* runs (huey: the scheduler only enqueues); a `Worker` executes them.

Missed fires come from the persisted `last_fire`, `since` and the clock via
`planner.plan_fires`; every start, skip, miss and buffered fire is a row with
its reason. The in-memory heap of next due times kept here only says *when to
look*: it is rebuilt on reconcile (reusing the due time of unchanged
schedules), never trusted for *what* to fire.
"""

import heapq

from flowmetal.schedule.cron import stable_jitter
from flowmetal.schedule.entry import NextFires, dt
from flowmetal.schedule.fire import Firing
from flowmetal.schedule.outcomes import Outcomes
from flowmetal.schedule.reconcile import Reconciler


class Scheduler(Reconciler, Firing, Outcomes):
    """Fires schedules into runs. `emit(kind, **fields)` receives one event per
    decision (fire, skip, miss, buffer, cancel, on_failure, added, changed,
    removed, error), always after the transaction that recorded it committed."""

    def __init__(self, store, root, emit=None):
        self.store = store
        self.root = str(root)
        self.emit = emit or (lambda kind, **fields: None)
        self.entries = {}  # name -> Entry
        self._heap = []  # (due, name)
        self._due = {}  # name -> due time in the heap (entries with another time are stale)
        self._cursor = {}  # name -> (key, due): what `due` was computed from (see _key)
        self._next = NextFires()


    def _rebuild_heap(self, now):
        rows = {r["name"]: r for r in self.store.schedules()}
        self._heap, self._due = [], {}
        cursor = {}
        for name, entry in self.entries.items():
            row = rows.get(name)
            if row is None:
                continue
            key = self._key(entry, row["since"], row["last_fire"])
            old = self._cursor.get(name)
            due = old[1] if old is not None and old[0] == key else self._compute_due(entry, row)
            cursor[name] = (key, due)
            if due is not None:
                self._due[name] = due
                self._heap.append((due, name))
        heapq.heapify(self._heap)
        self._cursor = cursor

    def _compute_due(self, entry, row, deferred=None):
        """When to look at this schedule next: its next fire (+ jitter), from the persisted state."""
        if deferred is not None:
            return deferred
        spec, since, last = entry.spec, row["since"], row["last_fire"]
        floor = last if last is not None and last >= since else since - 1e-6
        nominal = self._next.after(spec, floor)
        if nominal is None:
            return None
        jitter = stable_jitter(spec.name, dt(nominal), spec.jitter) if spec.enabled and spec.jitter else 0.0
        return nominal + jitter

    @staticmethod
    def _key(entry, since, last_fire):
        """What a schedule's due time is computed from."""
        return (entry.fingerprint, entry.spec.jitter, since, last_fire)

    def _push(self, name, due, key):
        self._cursor[name] = (key, due)
        if due is None:
            self._due.pop(name, None)
            return
        self._due[name] = due
        heapq.heappush(self._heap, (due, name))

    def next_due(self):
        """The earliest time at which `tick` has something to fire (None: nothing ever)."""
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def _pop_due(self, now):
        due = []
        while self._heap and self._heap[0][0] <= now:
            at, name = heapq.heappop(self._heap)
            if self._due.get(name) == at:
                del self._due[name]
                due.append(name)
        return due
