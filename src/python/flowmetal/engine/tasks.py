"""Outside workers and task(): leases on the `deferred` rows of a queue.

A worker claims a task (`claim`): it gets the task's id (`<run id>:<sequence>`,
also its idempotency key), payload and a lease token (random, 128 bits; only its
SHA-256 is stored). While it works it renews the lease (`heartbeat`); it ends
the task with `finish` (a result, or an error). A wrong or stale lease token is
refused (StaleLease); a lease that expires offers the task to the next claim.
"""

import hashlib
import json
import secrets

from flowmetal.engine.deferred import Completion, complete_effect

LEASE_SECONDS = 60.0


class StaleLease(Exception):
    """The lease token is not the task's current one, or it has expired."""


def _hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


def parse_id(task_id):
    run_id, _, seq = task_id.rpartition(":")
    if not run_id or not seq.isdigit():
        return None
    return run_id, int(seq)


def claim(store, queue, clock, lease_seconds=LEASE_SECONDS):
    """Lease the next task of `queue`: {id, queue, payload, attempt, lease, lease_expires}, or None."""
    token = secrets.token_urlsafe(16)
    row = store.claim_task(queue, _hash(token), lease_seconds, clock.now())
    if row is None:
        return None
    detail = json.loads(row["detail"])
    return {"id": f"{row['run_id']}:{row['seq']}", "queue": queue, "payload": detail.get("payload"),
            "attempt": row["attempts"], "lease": token, "lease_expires": row["lease_expires"]}


def heartbeat(store, task_id, lease, clock, lease_seconds=LEASE_SECONDS):
    key = parse_id(task_id)
    if key is None or not isinstance(lease, str) or not store.renew_task(*key, _hash(lease), lease_seconds,
                                                                           clock.now()):
        raise StaleLease(f"task {task_id}: the lease is not current (expired, or another worker's)")
    return clock.now() + lease_seconds


def finish(store, task_id, lease, clock, result=None, error=None):
    """Complete the task under its current lease; a Completion (or StaleLease)."""
    key = parse_id(task_id)
    if key is None:
        return Completion("unknown", f"no task {task_id}")
    with store.transaction():
        row = store.get_deferred(*key)
        if row is None or row["queue"] is None:
            return Completion("unknown", f"no task {task_id}")
        if row["state"] == "waiting" and (not isinstance(lease, str) or row["lease_hash"] != _hash(lease)
                                          or row["lease_expires"] < clock.now()):
            raise StaleLease(f"task {task_id}: the lease is not current (expired, or another worker's)")
        return complete_effect(store, *key, result=result, error=error, clock=clock)
