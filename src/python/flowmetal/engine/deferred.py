"""Completing deferred effects: a result delivered from outside the process.

A deferred effect (kind DEFERRED in effects/registry.py, e.g. `task()`) is
recorded by the gate as a started journal entry plus a row of the `deferred`
table describing what it waits for, in one transaction; the run then suspends
holding nothing (state waiting, no owner, WaitingFor(kind="effect", seq=...)).

`complete_effect(store, run_id, seq, result=None, error=None)`, callable from
any process, completes that row exactly once and makes the run due, in one
transaction. The run's next execution finds the completed row and records its
result in the journal (only the run's owner writes the journal).
"""

from dataclasses import dataclass

from flowmetal.clock import SYSTEM
from flowmetal.codec import canonical, content_hash, loads

COMPLETED, DUPLICATE, CONFLICT, EXPIRED, VOID, UNKNOWN = (
    "completed", "duplicate", "conflict", "expired", "void", "unknown")


@dataclass(frozen=True)
class Completion:
    """What a completion did. `outcome`: completed (this call won), duplicate (already
    completed with this same payload: nothing changed), conflict (already completed with a
    different payload: nothing changed), expired (its deadline passed), void (its run has
    ended), unknown (no such deferred effect). `message` says it in a sentence."""

    outcome: str
    message: str

    @property
    def ok(self):
        return self.outcome in (COMPLETED, DUPLICATE)


def payload_hash(result, error):
    return content_hash(canonical({"error": error, "result": result}))


def complete_effect(store, run_id, seq, result=None, error=None, clock=None):
    """Complete the deferred effect at journal position `seq` of run `run_id` with `result`
    (a JSON value) or `error` (a string: the effect failed). The first completion wins and
    wakes the run; a later one changes nothing and says so. Returns a Completion."""
    clock = clock or store.clock or SYSTEM
    if error is not None and not isinstance(error, str):
        raise TypeError("complete_effect: error must be a string")
    text = canonical(result)  # (raises on a value JSON cannot hold)
    digest = payload_hash(loads(text), error)
    where = f"deferred effect {run_id}:{seq}"
    with store.transaction():
        now = clock.now()
        if store.complete_deferred(run_id, seq, text, error, digest, now):
            store.wake(run_id)
            return Completion(COMPLETED, f"{where} completed")
        row = store.get_deferred(run_id, seq)
        if row is None:
            return Completion(UNKNOWN, f"no {where}")
        if row["state"] == "completed":
            if row["payload_hash"] == digest:
                return Completion(DUPLICATE, f"{where} already completed (with the same payload)")
            return Completion(CONFLICT, f"{where} already completed with a different payload")
        if row["state"] == "expired" or (row["deadline"] is not None and now >= row["deadline"]):
            return Completion(EXPIRED, f"{where} expired")
        run = store.get_run(run_id)
        state = run["state"] if run else "gone"
        return Completion(VOID, f"{where} is void: its run has ended ({state})")


def is_done(store, run_id, seq):
    """Has the deferred row been completed (so a run about to wait for it is due at once)?"""
    row = store.get_deferred(run_id, seq)
    return row is not None and row["state"] == "completed"
