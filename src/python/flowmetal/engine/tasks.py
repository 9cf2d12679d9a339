"""Outside workers and task(): leases on the `deferred` rows of a queue.

A worker claims a task (`claim`): it gets the task's id (`<run id>:<sequence>`,
also its idempotency key), payload and a lease token (random, 128 bits; only its
SHA-256 is stored). While it works it renews the lease (`heartbeat`); it ends
the task with `finish` (a result, or an error). A wrong or stale lease token is
refused (StaleLease) and changes nothing.

- A lease lasts the seconds the claim asked for, but never longer than the
  task's `heartbeat =` interval: a worker that stops heartbeating loses the task
  within that interval. A lease that expires offers the task to the next claim
  (attempt + 1); the row counts it in `lost`, and the journal entry of the task
  says re-executed (the lost worker may have done the work).
- A `fail` with `retryable` under the task's `retry = retry_policy(...)`, while
  attempts are left (`attempts` counts every claim), gives the lease up and
  offers the task again after the policy's delay (flowmetal/retry.py; the delay is
  kept in the row: durable). Otherwise the failure ends the task: the run gets
  the error (`check = True`) or a struct with ok False.
"""

import hashlib
import json
import secrets
from dataclasses import dataclass

from flowmetal import retry as retry_mod
from flowmetal.engine.deferred import Completion, complete_effect

LEASE_SECONDS = 60.0
RETRYING = "retrying"  # a Completion outcome: the failed attempt will be offered again


@dataclass(frozen=True)
class Retrying(Completion):
    """A failed attempt that will be offered again at `retry_at`."""

    retry_at: float = 0.0


class StaleLease(Exception):
    """The lease token is not the task's current one, or it has expired."""


def _hash(token):
    return hashlib.sha256(token.encode()).hexdigest()


def parse_id(task_id):
    run_id, _, seq = task_id.rpartition(":") if isinstance(task_id, str) else ("", "", "")
    if not run_id or not seq.isdigit():
        return None
    return run_id, int(seq)


def _stale(task_id):
    return StaleLease(f"task {task_id}: the lease is not current (expired, or another worker's)")


def claim(store, queues, clock, lease_seconds=LEASE_SECONDS, worker=None):
    """Lease the oldest offered task of `queues` (a name or a list): a dict in the shape of
    the claim route ({id, queue, payload, attempt, lease_token, idempotency_key,
    lease_until, heartbeat, deadline}), or None."""
    token = secrets.token_urlsafe(16)
    row = store.claim_task(queues, _hash(token), lease_seconds, clock.now(), worker=worker)
    if row is None:
        return None
    detail = json.loads(row["detail"])
    task_id = f"{row['run_id']}:{row['seq']}"
    return {"id": task_id, "queue": row["queue"], "payload": detail.get("payload"), "attempt": row["attempts"],
            "lease_token": token, "idempotency_key": detail.get("key") or task_id,
            "lease_until": row["lease_expires"], "heartbeat": detail.get("heartbeat"), "deadline": row["deadline"]}


def claim_many(store, queues, clock, lease_seconds=LEASE_SECONDS, worker=None, most=1):
    """Up to `most` tasks (claim), each leased by its own statement."""
    got = []
    while len(got) < most:
        task = claim(store, queues, clock, lease_seconds, worker)
        if task is None:
            break
        got.append(task)
    return got


def heartbeat(store, task_id, lease, clock, lease_seconds=None):
    """Renew the lease (by `lease_seconds`, default what the claim asked, capped by the task's
    heartbeat interval); the new expiry time, or StaleLease."""
    key = parse_id(task_id)
    if key is None or not isinstance(lease, str):
        raise _stale(task_id)
    with store.transaction():
        row = store.get_deferred(*key)
        if row is None or row["queue"] is None:
            raise _stale(task_id)
        seconds = lease_seconds or row.get("lease_seconds") or LEASE_SECONDS
        if not store.renew_task(*key, _hash(lease), float(seconds), clock.now()):
            raise _stale(task_id)
        return store.get_deferred(*key)["lease_expires"]


def finish(store, task_id, lease, clock, result=None, error=None, retryable=False):
    """End the attempt under its current lease: a Completion (or StaleLease). A retryable
    error with attempts left under the task's retry policy gives a Retrying (outcome
    RETRYING); any other error ends the task."""
    key = parse_id(task_id)
    if key is None:
        return Completion("unknown", f"no task {task_id}")
    with store.transaction():
        row = store.get_deferred(*key)
        if row is None or row["queue"] is None:
            return Completion("unknown", f"no task {task_id}")
        now = clock.now()
        if row["state"] == "waiting" and (not isinstance(lease, str) or row["lease_hash"] != _hash(lease)
                                          or row["lease_expires"] < now):
            raise _stale(task_id)
        if error is not None and row["state"] == "waiting":
            policy = retry_policy(row)
            if policy is not None:
                if retryable and row["attempts"] < policy.attempts:
                    at = now + retry_mod.delay(policy, row["attempts"], task_id)
                    if not store.retry_task(*key, _hash(lease), at, now):
                        raise _stale(task_id)
                    return Retrying(RETRYING, f"task {task_id} failed on attempt {row['attempts']} of "
                                              f"{policy.attempts}; it is offered again in {at - now:.3g}s", at)
                if row["attempts"] > 1:
                    error = f"{error} (after {row['attempts']} attempts)"
        return complete_effect(store, *key, result=result, error=error, clock=clock)


def retry_policy(row):
    """The RetryPolicy of a task row, or None (a fail ends it)."""
    spec = json.loads(row["detail"]).get("retry")
    return None if spec is None else retry_mod.RetryPolicy.from_args(spec)
