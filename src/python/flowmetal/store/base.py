"""The storage contract every backend implements (SQLite now, PostgreSQL later).

Rows cross this interface as plain dicts (`model.Run.from_row` types a run row).
tests/store_contract/ checks every backend against this text.

Transactions and isolation (what the engine relies on)
------------------------------------------------------
- Every method is atomic on its own: it commits alone, or, inside
  `with store.transaction():`, with the rest of that block (all or nothing).
  Transactions nest (an inner one joins the outer one).
- A transaction is *serializable* with respect to writers: two transactions
  that write never interleave; a `transaction()` takes the write lock when it
  begins (SQLite: BEGIN IMMEDIATE; PostgreSQL: SERIALIZABLE, or row locks
  taken by the same conditional statements). A read inside a transaction
  sees the database as of that transaction, with its own writes.
- A read outside a transaction sees a committed snapshot and never waits for
  a writer (SQLite WAL). A read-only store (`readonly=True`) never takes the
  write lock at all.
- Every intent method that changes a run decides *and* writes in one
  statement, conditional on the state it expects (the owner, the state), and
  says with its return value whether it changed the run. So a check and its
  effect can never be separated by another process's write.

Runs, leases and fencing
------------------------
A run is executed by the process that claimed it (its `owner`) while its
lease lasts. Leases are stamped with the store's clock (`clock` of the
store: SQLite uses the injected `Clock`; a server database may use its own
now()), so processes never compare their own clocks with each other's
leases. `claim` takes a pending run, a waiting run whose wake time has come,
or a running run whose lease expired; never a running run with a live lease.
Every write a run's execution makes (`insert_journal`, `update_journal`,
`suspend_run`, `end_run` with an owner, `release`) names its owner and is
refused (returns False, changes nothing) once that owner no longer holds the
run: a process that lost its lease can never overwrite the work of the one
that took over. The engine changes runs only through these intent methods
(see engine/lifecycle.py); `update_run` is for tests and tools.
"""

from abc import ABC, abstractmethod

from flowmetal.errors import NotFound, UserError
from flowmetal.model import ENDED_STATES, RunState

RUN_STATES = tuple(s.value for s in RunState)
ENDED = tuple(s.value for s in RunState if s in ENDED_STATES)


def run_by_prefix(rows, prefix):
    """`find_run`'s answer from the (at most two) rows whose id starts with `prefix`, in id order."""
    exact = [r for r in rows if r["id"] == prefix]
    if exact:
        return dict(exact[0])
    if not rows:
        raise NotFound(f"no run {prefix!r}")
    if len(rows) > 1:
        raise UserError(f"run id prefix {prefix!r} is ambiguous: it matches {rows[0]['id']}, {rows[1]['id']}, ...")
    return dict(rows[0])


class Store(ABC):
    clock = None  # the Clock that stamps leases, updated_at and written_at times

    # --- lifecycle
    @abstractmethod
    def transaction(self, tree=None):
        """Context manager: one atomic transaction on this thread, isolated from every other
        transaction() as if they ran one at a time. With `tree` (a run tree's root id), the
        caller promises to change only rows of that tree: such a transaction is isolated from
        the other transactions of the same tree and from every transaction without a tree,
        but may run at once with those of other trees (a run's end or suspension)."""

    @abstractmethod
    def close(self): ...

    # --- runs
    @abstractmethod
    def insert_run(self, run: dict): """A new run row (pending); `num` is assigned by the store."""

    @abstractmethod
    def get_run(self, run_id: str) -> dict | None: ...

    @abstractmethod
    def find_run(self, prefix: str) -> dict:
        """The run whose id is or starts with `prefix`; NotFound or ambiguous -> UserError."""

    @abstractmethod
    def list_runs(self, status=None, limit=50, parent_id=None, root_id=None) -> list: ...

    @abstractmethod
    def descendants(self, run_id: str) -> list: """Ids of the children, their children, ..."""

    # --- a run's life (intent methods; each is one conditional statement)
    @abstractmethod
    def claim(self, owner: str, lease_seconds: float, root_id=None, run_id=None) -> dict | None:
        """Take one runnable run (pending; waiting and due; running with an expired lease),
        oldest due first, optionally of the tree `root_id` or only `run_id`: it becomes
        running, owned by `owner` until now + lease_seconds, executions + 1. None if none."""

    @abstractmethod
    def renew_leases(self, owner: str, lease_seconds: float) -> list:
        """Extend every lease `owner` holds to now + lease_seconds; return
        [(id, cancel_requested, deadline)] of its runs."""

    @abstractmethod
    def release(self, run_id: str, owner: str) -> bool:
        """`owner` gives the running run up without ending it: no owner, lease expired, so
        any worker takes it over (an interrupt; an owner that died)."""

    @abstractmethod
    def suspend_run(self, run_id: str, owner: str, waiting_for: str, wake_at: float | None) -> bool:
        """`owner`'s run waits: state waiting, no owner, `waiting_for` (WaitingFor JSON),
        due at `wake_at` (None: only when woken)."""

    @abstractmethod
    def end_run(self, run_id: str, state: str, *, owner=None, result=None, error=None,
                continued_as=None) -> bool:
        """The run ends in `state` (an ended state). With `owner`: only while that owner
        holds it running. Without: only if it is pending or waiting (nobody executes it)."""

    @abstractmethod
    def wake(self, run_id: str) -> bool:
        """A waiting run is due now (a signal arrived, a child ended). False if not waiting."""

    @abstractmethod
    def request_cancel(self, run_id: str, state: str = "cancelled") -> bool:
        """Record that the run must end as `state` (cancelled, timed_out); its owner sees it
        through renew_leases/owned_runs. False if it has ended."""

    @abstractmethod
    def owned_runs(self, owner: str) -> list:
        """[(id, cancel_requested, deadline)] of the running runs `owner` holds (no lease change)."""

    @abstractmethod
    def running_runs(self) -> list: """[{id, owner, lease_expires}] of every running run."""

    @abstractmethod
    def next_wake(self, root_id=None) -> float | None: ...

    @abstractmethod
    def has_pending(self, root_id=None) -> bool:
        """Whether any run (of the tree `root_id`) is pending or running."""

    @abstractmethod
    def wait_for_change(self, timeout: float, event=None) -> bool:
        """Wait up to `timeout` seconds for another connection (or process) to commit, or
        for `event` (a threading.Event) to be set. True if something changed; the first
        call on a thread only starts watching. A cheap "anything new?"."""

    # --- sources
    @abstractmethod
    def pin_sources(self, run_id: str, texts: dict): ...

    @abstractmethod
    def pinned_sources(self, run_id: str) -> dict: ...

    @abstractmethod
    def copy_sources(self, from_run: str, to_run: str): ...

    # --- journal
    @abstractmethod
    def journal(self, run_id: str) -> list: ...

    @abstractmethod
    def insert_journal(self, entry: dict, owner: str) -> bool:
        """Only while `owner` holds the run running (else False). Append one entry, a dict with every journal column: run_id, seq, builtin, args,
        digest, status, result, error, data, started_at, ended_at (None where unset)."""

    @abstractmethod
    def insert_journal_many(self, entries: list, owner: str) -> bool:
        """Several new entries of one run in one transaction (the gate's grouped commit of pure
        effects), fenced as insert_journal: all are written, or none and False (another owner,
        or the run is no longer running). Joins the caller's transaction if there is one."""

    def update_journal(self, run_id: str, seq: int, owner: str, **fields) -> bool: ...

    def fork_journal(self, source_id: str, run_id: str, upto: int):
        """Copy journal entries 1..`upto` of `source_id` to the new run `run_id` (which has none)
        and set its `forked_from` = source_id, `forked_at` = upto (engine/fork.py). Call inside
        a transaction. (Not abstract yet, so a backend written before it still instantiates.)"""
        raise NotImplementedError(f"{type(self).__name__} cannot fork runs")

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

    # --- deferred effects (engine/deferred.py): results that come from outside the process
    #
    # A row per deferred effect, keyed by (run_id, seq): builtin, queue (a task's; else
    # None), detail (JSON: what it waits for), deadline (None: none), created_at; and
    # state "waiting" | "completed" | "expired", result (JSON), error, payload_hash,
    # completed_at; token_hash (a callback's: the SHA-256 of its URL token, never the token).
    @abstractmethod
    def insert_deferred(self, row: dict):
        """A new waiting row (run_id, seq, builtin, queue, detail, deadline, created_at);
        the gate inserts it in the transaction that records the journal entry."""

    @abstractmethod
    def get_deferred(self, run_id: str, seq: int) -> dict | None: ...

    @abstractmethod
    def deferred_by_token(self, token_hash: str) -> dict | None:
        """The row whose callback token has this SHA-256 (only the hash is stored)."""

    @abstractmethod
    def complete_deferred(self, run_id: str, seq: int, result, error, payload_hash: str, now: float) -> bool:
        """Complete a waiting row (one conditional statement): only while it is waiting, its
        deadline has not passed and its run has not ended. True for exactly one caller."""

    @abstractmethod
    def expire_deferred(self, run_id: str, seq: int, now: float) -> bool:
        """The run gives up on a waiting row at its deadline; False if it was completed first."""

    @abstractmethod
    def claim_task(self, queue, lease_hash: str, lease_seconds: float, now: float, worker=None) -> dict | None:
        """Lease the oldest waiting task of `queue` (a name, or a list of names) not leased (or
        whose lease expired) and offered by now (its retry delay over), of a live run, not past
        its deadline: lease_hash, lease_expires = now + lease_seconds (at most the task's
        heartbeat interval), attempts + 1, `worker` kept on the row, in one statement. None if
        there is none."""

    @abstractmethod
    def renew_task(self, run_id: str, seq: int, lease_hash: str, lease_seconds: float, now: float) -> bool:
        """Extend a live lease held under `lease_hash`; False if it is stale or another's."""

    @abstractmethod
    def retry_task(self, run_id: str, seq: int, lease_hash: str, offer_at: float, now: float) -> bool:
        """Give up the live lease held under `lease_hash`: the task is offered again from
        `offer_at` (its retry delay). False if the lease is stale or another's."""

    @abstractmethod
    def waiting_deferred(self, queue=None, limit=100) -> list: """Waiting rows, oldest first."""

    @abstractmethod
    def task_queues(self, now: float) -> list:
        """One row per queue with a waiting task of a live run, by queue name: {queue, depth
        (waiting tasks), leased (of those, under a live lease), oldest (created_at of the
        oldest waiting task)}. One grouped query: /metrics and the web view call it."""

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

    # --- worker processes (`flowmetal workers`)
    @abstractmethod
    def worker_started(self, worker_id: str, host: str, pid: int, started_at: float):
        """Record a worker process (its owner id) as it starts."""

    @abstractmethod
    def worker_seen(self, worker_id: str, now: float) -> bool: """Its heartbeat: last seen at `now`."""

    @abstractmethod
    def worker_stopped(self, worker_id: str, now: float) -> bool: ...

    @abstractmethod
    def workers(self, limit=100) -> list:
        """Worker rows (id, host, pid, started_at, seen_at, stopped_at, runs held), newest first."""

    # --- retention
    @abstractmethod
    def prune(self, before: float, now: float, dry_run=False) -> dict:
        """Delete ended run trees older than `before`, their rows, old settled fires and
        unreferenced sources and blobs; {"runs": n, "journal": n, "logs": n, "signals": n,
        "fires": n, "sources": n, "blobs": n}."""
