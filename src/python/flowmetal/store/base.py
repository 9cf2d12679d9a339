"""The storage interface every backend implements (SQLite now, PostgreSQL later).

Rows cross this interface as plain dicts with JSON columns already decoded
where noted. Several writes compose into one transaction:

    with store.transaction():
        store.insert_journal(...)
        store.update_run(...)

Outside `transaction()` each method commits on its own. Methods that change
a run which is being executed take `owner` and change nothing (returning
False) when the caller no longer owns the run: a process that lost its lease
can never overwrite the work of the one that took over.
"""

from abc import ABC, abstractmethod

RUN_STATES = ("pending", "running", "waiting", "completed", "failed", "cancelled", "timed_out")
ENDED = ("completed", "failed", "cancelled", "timed_out")


class Store(ABC):
    # --- lifecycle
    @abstractmethod
    def transaction(self): """Context manager: one atomic transaction on this thread."""

    @abstractmethod
    def close(self): ...

    # --- runs
    @abstractmethod
    def insert_run(self, run: dict): ...

    @abstractmethod
    def get_run(self, run_id: str) -> dict | None: ...

    @abstractmethod
    def find_run(self, prefix: str) -> dict:
        """The run whose id is or starts with `prefix`; NotFound or ambiguous -> UserError."""

    @abstractmethod
    def list_runs(self, status=None, limit=50, parent_id=None, root_id=None) -> list: ...

    @abstractmethod
    def update_run(self, run_id: str, *, if_owner=None, **fields) -> bool:
        """Set columns of a run (`owner=` sets the owner column); with `if_owner`, only
        if that owner still holds the run. Returns whether the run was changed."""

    @abstractmethod
    def claim_run(self, owner: str, now: float, lease_until: float, root_id=None, run_id=None) -> dict | None:
        """Atomically take one runnable run: pending, waiting and due, or running with an expired lease."""

    @abstractmethod
    def renew_leases(self, owner: str, until: float) -> list:
        """Extend every lease held by `owner`; return [(id, cancel_requested, deadline)] of its runs."""

    @abstractmethod
    def running_runs(self) -> list: ...

    @abstractmethod
    def owned_runs(self, owner: str) -> list:
        """[(id, cancel_requested, deadline)] of the running runs `owner` holds (no lease change)."""

    @abstractmethod
    def next_wake(self, root_id=None) -> float | None: ...

    @abstractmethod
    def has_pending(self, root_id=None) -> bool:
        """Whether any run (of the tree `root_id`) is pending or running."""

    @abstractmethod
    def data_version(self) -> int:
        """A counter that changes when another connection commits: a cheap "anything new?"."""

    # --- sources
    @abstractmethod
    def pin_sources(self, run_id: str, texts: dict): ...

    @abstractmethod
    def pinned_sources(self, run_id: str) -> dict: ...

    @abstractmethod
    def copy_sources(self, from_run: str, to_run: str): ...

    @abstractmethod
    def descendants(self, run_id: str) -> list: ...

    # --- journal
    @abstractmethod
    def journal(self, run_id: str) -> list: ...

    @abstractmethod
    def insert_journal(self, entry: dict, owner: str) -> bool:
        """Append one entry, a dict with every journal column: run_id, seq, builtin, args,
        digest, status, result, error, data, started_at, ended_at (None where unset)."""

    @abstractmethod
    def update_journal(self, run_id: str, seq: int, owner: str, **fields) -> bool: ...

    # --- logs
    @abstractmethod
    def add_logs(self, run_id: str, rows: list): """rows: (seq, n, time, stream, line); duplicates ignored."""

    @abstractmethod
    def logs(self, run_id: str, after_rowid=0) -> list: ...

    @abstractmethod
    def tree_logs(self, root_id: str, after_rowid=0) -> list:
        """Log lines of every run of one tree (a run, its children, its continuations)."""

    @abstractmethod
    def max_log_rowid(self) -> int: ...

    # --- signals
    @abstractmethod
    def insert_signal(self, run_id: str, name: str, payload: str, now: float): ...

    @abstractmethod
    def has_signal(self, run_id: str, name: str) -> bool: ...

    @abstractmethod
    def signals(self, run_id: str) -> list: ...

    @abstractmethod
    def take_signal(self, run_id: str, name: str, seq: int) -> dict | None:
        """Mark the oldest unconsumed signal `name` as consumed by journal entry `seq`."""

    # --- blobs
    @abstractmethod
    def put_blob(self, data: str, now: float) -> str: """Store by content hash, marked written at `now`."""

    @abstractmethod
    def get_blob(self, digest: str) -> str: ...

    # --- schedules and fires (the scheduler's state, see flowmetal.schedule.daemon)
    #
    # A schedule row: name, spec (canonical JSON of ScheduleSpec.to_dict()),
    # fingerprint, since (fires before it are never started), enabled, last_fire
    # (the newest nominal fire time handled: the source of truth for catch-up),
    # file, line, sources (JSON {file: content hash} of its last good load),
    # removed_at, updated_at. A fire row is unique per (schedule, nominal):
    # action "started" | "skipped" | "missed" | "buffered", reason, run_id,
    # recorded_at, through (a summary row covers nominal..through), start_at
    # (nominal + jitter), run_state (the run's final state, once seen) and
    # followup_run (the on_failure run). Times are epoch seconds.
    @abstractmethod
    def schedules(self) -> list: """Every schedule row, by name."""

    @abstractmethod
    def get_schedule(self, name: str) -> dict | None: ...

    @abstractmethod
    def insert_schedule(self, row: dict) -> bool: """Insert unless the name exists; True if inserted."""

    @abstractmethod
    def update_schedule(self, name: str, **fields) -> bool: ...

    @abstractmethod
    def insert_fire(self, fire: dict) -> bool:
        """Insert unless (schedule, nominal) exists; True only for the caller that inserted it."""

    @abstractmethod
    def update_fire(self, schedule: str, nominal: float, only_open=False, **fields) -> bool:
        """Set columns of a fire; with `only_open`, only if its run_state is not recorded yet."""

    @abstractmethod
    def fires(self, schedule: str, limit=100, action=None) -> list: """Newest first."""

    @abstractmethod
    def buffered_fires(self, schedule: str) -> list: """Fires waiting for the active run to end, oldest first."""

    @abstractmethod
    def schedules_with_buffered(self) -> list: ...

    @abstractmethod
    def ended_fires(self, limit=1000) -> list:
        """Started fires whose run has ended but whose run_state is not recorded yet,
        with the run's state, error, continued_as, started_at, ended_at."""

    @abstractmethod
    def active_schedule_runs(self, schedule: str) -> list:
        """Runs of the schedule that have not ended: [{id, state, cancel_requested}]."""

    @abstractmethod
    def fire_counts(self) -> dict: """{schedule: {action: number of fire rows}}."""

    @abstractmethod
    def put_sources(self, texts: dict) -> dict: """Store source texts by content hash; returns {name: hash}."""

    @abstractmethod
    def get_sources(self, hashes: dict) -> dict: """{name: hash} -> {name: text}."""

    # --- retention
    @abstractmethod
    def prune(self, before: float, now: float, dry_run=False) -> dict:
        """Delete ended run trees older than `before`, their rows, old settled fires and
        unreferenced sources and blobs; {"runs": n, "journal": n, "logs": n, "signals": n,
        "fires": n, "sources": n, "blobs": n}."""
