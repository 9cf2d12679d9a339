"""A run's life, in one place: every change of a run's state goes through here.

    create ──> pending ──claim──> running ──suspend──> waiting ──wake/due──> (claim again)
                                    │  └──release (interrupt, dead owner)──> running, no owner
                                    ├──end──> completed | failed | cancelled | timed_out
                                    └──continue_as_new──> completed (continued_as: a new pending run)
    cancel: a pending or waiting run ends at once; a running one is asked (its owner ends it).

Each function is one store transaction made of the store's intent methods
(store/base.py), so a change and its consequences commit together: a run's end
cancels its descendants (children do not outlive their parent, as Temporal's
default parent-close policy) and makes a parent that waits on children due.
Functions that act for the run's owner return "lost" when the store refused
the write because another process owns the run now.
"""

import traceback

from flowmetal.codec import canonical
from flowmetal.engine import deferred
from flowmetal.engine.deferred import complete_effect  # noqa: F401 (a run's life: completing its deferred effect)
from flowmetal.engine.gate import run_stamp
from flowmetal.errors import UserError
from flowmetal.ids import new_run_id
from flowmetal.model import INTERNAL_ERROR, Run, RunState, WaitingFor

LEASE_SECONDS = 30.0  # how long a claim lasts without renewal; the heartbeat renews it every few seconds


def create(store, clock, *, file, function, args, texts, root_dir=None, timeout=None,
           parent_id=None, root_id=None, continued_from=None, schedule=None, fire_time=None,
           posargs=None, run_id=None):
    """Insert a pending run with its pinned sources (`texts`: {name: text}, or the id of a
    run whose pinned sources it shares). Call inside a transaction or alone; returns its id."""
    now = clock.now()
    run_id = run_id or new_run_id(now, clock)
    if not isinstance(args, dict):
        raise UserError("run arguments must be a JSON object")
    row = {
        "id": run_id, "file": file, "function": function, "args": canonical(args),
        "posargs": None if not posargs else canonical(posargs),
        "state": RunState.PENDING.value, "created_at": now, "updated_at": now, "root_dir": root_dir,
        "parent_id": parent_id, "root_id": root_id or run_id, "continued_from": continued_from,
        "schedule": schedule, "fire_time": fire_time,
        "deadline": None if timeout is None else now + timeout,
        **run_stamp(),  # the release, prelude and digest rule that start it (the gate's)
    }
    with store.transaction():
        store.insert_run(row)
        if isinstance(texts, str):
            store.copy_sources(texts, run_id)
        else:
            store.pin_sources(run_id, texts)
    return run_id


def claim(store, owner, root_id=None, run_id=None):
    """Take one runnable run for `owner` (see Store.claim); a Run, or None."""
    return Run.from_row(store.claim(owner, LEASE_SECONDS, root_id=root_id, run_id=run_id))


def renew(store, owner):
    """Extend `owner`'s leases; [(id, cancel_requested, deadline)] of its running runs."""
    return store.renew_leases(owner, LEASE_SECONDS)


def tree_of(run):
    """The id of the run tree `run` belongs to (its root's), for store.transaction(tree=)."""
    return run.get("root_id") or run["id"]


def suspend(store, clock, run, owner, waiting_for, wake_at):
    """The run waits for `waiting_for` (a WaitingFor) until `wake_at` (None: until woken).
    What it waits for may have happened already (a signal sent, a child ended, a cancel
    asked): then it is due at once. Returns "waiting" or "lost"."""
    now = clock.now()
    if run["deadline"] is not None:
        wake_at = run["deadline"] if wake_at is None else min(wake_at, run["deadline"])
    with store.transaction(tree=tree_of(run)):
        if waiting_for.kind == "signal" and store.has_signal(run["id"], waiting_for.name):
            wake_at = now
        elif waiting_for.kind == "effect" and deferred.is_done(store, run["id"], waiting_for.seq):
            wake_at = now  # completed while the run was still running: no wake-up is lost
        elif waiting_for.kind == "children":
            if any(RunState(store.get_run(c)["state"]).ended for c in waiting_for.runs):
                wake_at = now
        fresh = store.get_run(run["id"])
        if fresh is not None and fresh["cancel_requested"]:
            wake_at = now
        ok = store.suspend_run(run["id"], owner, waiting_for.to_json(), wake_at)
    return RunState.WAITING.value if ok else "lost"


def end(store, clock, run, owner, state, result=None, error=None, continued_as=None):
    """`owner`'s run ends in `state`; its descendants are cancelled and its parent told.
    Returns the state, or "lost"."""
    state = RunState(state)
    with store.transaction(tree=tree_of(run)):  # (its descendants and parent are of its tree)
        if not store.end_run(run["id"], state.value, owner=owner, result=result, error=error,
                             continued_as=continued_as):
            return "lost"
        _ended(store, clock, run)
    return state.value


def continue_as_new(store, clock, run, owner, kwargs):
    """End the run as completed and start its next incarnation (same code, parent, root and
    schedule) with `kwargs`, in one transaction. Returns "completed", or "lost" (and then
    no new run exists)."""
    try:
        with store.transaction():
            new_id = create(
                store, clock, file=run["file"], function=run["function"], args=kwargs, texts=run["id"],
                root_dir=run["root_dir"], parent_id=run["parent_id"], root_id=run["root_id"],
                continued_from=run["id"], schedule=run["schedule"], fire_time=run["fire_time"],
            )
            if not store.end_run(run["id"], RunState.COMPLETED.value, owner=owner, result="null",
                                 continued_as=new_id):
                raise _Lost()  # (rolls the new run back)
            _ended(store, clock, run)
    except _Lost:
        return "lost"
    return RunState.COMPLETED.value


class _Lost(Exception):
    pass


def release(store, run, owner):
    """`owner` stops executing the run without ending it (Ctrl-C, a drain, a dead owner): it
    stays running with no live owner, so the next worker takes it over at once."""
    return store.release(run["id"], owner)


def internal_error_text(exc):
    """The error of a run that a bug of ours failed: names itself, the exception and where."""
    where = ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.endswith("faults.py")]
    if frames:
        last = frames[-1]
        where = f" in {last.name} ({last.filename.rsplit('/', 1)[-1]}:{last.lineno})"
    detail = f": {exc}" if str(exc) else ""
    return f"{INTERNAL_ERROR}{type(exc).__name__}{where}{detail} — this is a bug in Flowmetal"


def fail_internal(store, clock, run, owner, exc):
    """An execution raised an exception of ours: fail the run with an error that says so,
    rather than leave it running under a live owner. If even that cannot be recorded (the
    database is gone), release the run so that another process takes it over. Returns the
    state the run is left in."""
    try:
        return end(store, clock, run, owner, RunState.FAILED, error=internal_error_text(exc))
    except Exception:
        try:
            release(store, run, owner)
        except Exception:
            pass
        return "error"


def wake(store, run_id):
    """A waiting run is due now."""
    return store.wake(run_id)


def signal_arrived(store, run, name):
    """A signal `name` was stored for `run` (a row): wake it if it waits for that signal."""
    w = WaitingFor.from_json(run["waiting_for"])
    if run["state"] == RunState.WAITING.value and w is not None and w.kind == "signal" and w.name == name:
        store.wake(run["id"])


def cancel(store, clock, run_id, state="cancelled"):
    """Cancel one run: a pending or waiting run ends now (and its parent is told); a running
    one is asked to stop (its owner sees the request at its next heartbeat and ends it)."""
    row = store.get_run(run_id)
    if row is None or RunState(row["state"]).ended:
        return
    state = RunState(state)
    if row["state"] in (RunState.PENDING.value, RunState.WAITING.value) and \
            store.end_run(run_id, state.value, error=state.value.replace("_", " ")):
        notify_parent(store, clock, row)
    else:
        store.request_cancel(run_id, state.value)


def cancel_tree(store, clock, run_id, state="cancelled"):
    """Cancel a run and every descendant, in one transaction."""
    with store.transaction():
        for rid in [run_id, *store.descendants(run_id)]:
            cancel(store, clock, rid, state)


def notify_parent(store, clock, run):
    """A child ended: a parent waiting on children is due now."""
    if run.get("parent_id"):
        store.wake(run["parent_id"])


def _ended(store, clock, run):
    for child in store.descendants(run["id"]):
        cancel(store, clock, child, RunState.CANCELLED)
    notify_parent(store, clock, run)
