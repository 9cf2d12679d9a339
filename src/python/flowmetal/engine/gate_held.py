"""What the gate holds in memory: the grouped commit of pure effects (SPEC section 3).

The entries of pure effects (`now`, `random`, `uuid`, `env`, `secret`'s masked
entry) and the run's log lines are not written when they are made: they are
kept here, in call order, and written in the transaction of the gate's next
write, so that a loop of pure effects pays one commit (one fsync under
FLOWMETAL_SYNC=full) per group instead of one per effect. The next write is
whichever comes first of:

- an outside effect's "started" row (`sh`, `http`), a wait's row (`sleep`,
  retry delays, `wait_signal`, `wait`), a deferred effect's row (`task`,
  `callback`) with its `deferred` row, a spawn with the child's row,
  `continue_as_new`: each in one transaction with what is held before it;
- the end of the execution: the run's end, suspension, release (drain,
  interrupt) or internal failure, in the transaction of that state change
  (`Held.commit_with`);
- a bound: HOLD_ENTRIES held items, or HOLD_SECONDS since the oldest, checked
  whenever the gate is called; then the group is committed on its own.

Nothing outside the run can see a held value before it is durable: everything
the run does that another process can observe is one of the writes above, and
each carries the held items in its own transaction. A crash loses only held
items, which nobody saw; the next execution replays up to the last commit and
makes them again, live (new values, consistent with everything durable).

Fencing holds for the group: every entry goes through the store's owner check
(insert_journal_many: all or none), and a refused group rolls back with the
write it came with; the gate then stops with Lost, as for a single entry.

Crash points for tests (FLOWMETAL_FAULT, see engine/faults.py): `kill-held` and
`kill-commit` SIGKILL the process, the first when the gate holds its second
item since the last commit, the second inside a grouped commit after its
statements ran and before COMMIT; `NAME@N` at the Nth time the process reaches
the point.
"""

import os
import signal

# At most this many held items (entries and log lines), and for at most this long (seconds,
# by the clock's monotonic time, checked at each call of the gate): then they are committed.
HOLD_ENTRIES = 256
HOLD_SECONDS = 0.25

_reached = {}  # crash point -> times reached in this process (for NAME@N)


def crash_point(name):
    """SIGKILL this process at crash point `name` when FLOWMETAL_FAULT lists it (`name`, or
    `name@N`: the Nth time this process reaches it): a test's kill point, after which nothing
    runs, not even a finally."""
    faults = os.environ.get("FLOWMETAL_FAULT")
    if not faults or name not in faults:
        return
    _reached[name] = times = _reached.get(name, 0) + 1
    for item in faults.split(","):
        point, _, nth = item.partition("@")
        if point == name and (not nth or int(nth) == times):
            os.kill(os.getpid(), signal.SIGKILL)


class Refused(Exception):
    """The store refused a held group (fencing): the run is owned by another process now."""


class Held:
    """The journal entries and log rows of one execution not yet written, in order."""

    __slots__ = ("store", "run_id", "owner", "clock", "tree", "entries", "logs", "since")

    def __init__(self, store, run_id, owner, clock, tree=None):
        self.store, self.run_id, self.owner, self.clock = store, run_id, owner, clock
        self.tree = tree  # the run tree's root id: the group's transaction changes only rows of that tree
        self.entries = []
        self.logs = []  # (seq, n, time, stream, line)
        self.since = None  # monotonic time of the oldest held item

    def __bool__(self):
        return bool(self.entries or self.logs)

    def add_entry(self, entry):
        """Hold `entry`; True when a bound is reached and the group must be committed now."""
        self.entries.append(entry)
        return self._added()

    def add_log(self, row):
        self.logs.append(row)
        return self._added()

    def _added(self):
        if self.since is None:
            self.since = self.clock.monotonic()
        n = len(self.entries) + len(self.logs)
        if n == 2:
            crash_point("kill-held")
        return n >= HOLD_ENTRIES

    def overdue(self):
        """Held for longer than HOLD_SECONDS."""
        return self.since is not None and self.clock.monotonic() - self.since >= HOLD_SECONDS

    def write(self):
        """Write what is held, inside the caller's transaction (raises Refused when fenced out).
        The caller calls `clear` once its transaction has committed."""
        if self.entries and not self.store.insert_journal_many(self.entries, self.owner):
            raise Refused()
        if self.logs:
            self.store.add_logs(self.run_id, self.logs)

    def take(self):
        """Write what is held inside the caller's transaction and hold nothing from now on;
        returns what was taken, for `restore` if that transaction fails."""
        taken = (self.entries, self.logs, self.since)
        self.write()
        self.clear()
        return taken

    def restore(self, taken):
        """The transaction of `take` rolled back: hold again what it took (before anything new)."""
        entries, logs, since = taken
        self.entries, self.logs = entries + self.entries, logs + self.logs
        self.since = since if since is not None else self.since

    def clear(self):
        self.entries = []
        self.logs = []
        self.since = None

    def commit(self, then=None):
        """Commit what is held, and `then()` (more writes, or a state change) in the same
        transaction. Returns what `then` returns; a `then` that answers "lost" (its write was
        refused) rolls the whole group back. Raises Refused when fenced out."""
        with self.store.transaction(tree=self.tree):
            self.write()
            value = then() if then is not None else None
            if value == "lost":
                raise Refused()
            crash_point("kill-commit")
        self.clear()
        return value

    def commit_with(self, change):
        """`change()`, a state change of the run (lifecycle), committed together with what is
        held. Returns its value, or "lost" when the store refused the group or the change."""
        if not self:
            return change()
        try:
            return self.commit(change)
        except Refused:
            return "lost"
