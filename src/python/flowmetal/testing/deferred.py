"""Deferred effects under test: the test's stand-in for task workers, and callback delivery.

A run's `task()` records a started journal entry and a `deferred` row, and the
run waits holding nothing, exactly as in production (the gate is not changed).
Outside the gate, as a worker would, `TaskDesk` looks at the new task rows after
every execution: the first `t.mock_task` fake whose pattern matches the task's
queue answers it, `delay` seconds of virtual time after the task was created (at
once by default), through engine/deferred.py's `complete_effect`, so the row's
deadline, the run's wake-up and the journaled value `{ok, value, error, attempts}`
are the production ones. A task no fake matches fails the test naming its queue.
While an answer is pending, its due time is a wake time of the virtual clock like
a timer's; a task whose `timeout` passes first expires in virtual time, and the
fake's late answer is refused as a worker's would be ("expired").

`t.callback()` / `t.approve()` / `t.reject()` complete a callback's row with
`complete_effect`, as `POST /callbacks/{token}` does (an approval's form posts
`{"approved": true}` or `{"approved": false}`).
"""

import json
from dataclasses import dataclass

from flowmetal.engine.deferred import complete_effect
from flowmetal.errors import UserError
from flowmetal.testing.fakes import Call


@dataclass
class Pending:
    due: float
    run: str
    seq: int
    call: Call
    answer: dict


class TaskDesk:
    """Answers the test's task rows with their fakes; knows when the next answer is due."""

    def __init__(self, store, clock, fakes):
        self.store, self.clock, self.fakes = store, clock, fakes
        self.seen = set()  # (run, seq) of the task rows already taken up
        self.pending = []

    def dispatch(self):
        """Take up the task rows created since the last call; deliver the answers due now.
        A task no fake matches is recorded in fakes.unmatched (the harness fails the test)."""
        for row in self.store.waiting_deferred(limit=1_000_000):
            key = (row["run_id"], row["seq"])
            if row["queue"] is None or key in self.seen:
                continue
            self.seen.add(key)
            detail = json.loads(row["detail"])
            call = Call("task", row["run_id"], row["seq"], row["queue"],
                        {"queue": row["queue"], "payload": detail.get("payload"), "key": detail.get("key")})
            self.fakes.calls.append(call)
            fake = self.fakes.find("task", row["queue"])
            if fake is None:
                self.fakes.unmatched.append(call)
                continue
            call.fake = fake.pattern
            self.pending.append(Pending(row["created_at"] + fake.answer["delay"], row["run_id"], row["seq"],
                                        call, fake.answer))
        return self.deliver()

    def next_due(self):
        return min((p.due for p in self.pending), default=None)

    def deliver(self):
        """Complete the tasks whose answer is due; True when one was delivered."""
        now = self.clock.now()
        due = sorted((p for p in self.pending if p.due <= now), key=lambda p: p.due)
        for p in due:
            self.pending.remove(p)
            a = p.answer
            outcome = complete_effect(self.store, p.run, p.seq, result=a["result"], error=a["error"],
                                      clock=self.clock).outcome
            p.call.result = {"ok": a["error"] is None, "value": a["result"], "error": a["error"],
                             "delivered": outcome}
        return bool(due)


def describe_callback(row):
    detail = json.loads(row["detail"])
    name = detail.get("callback")
    kind = "approval" if detail.get("approval") else "callback"
    return f"{kind} {name!r} of run {row['run_id']} (position {row['seq']}, {row['state']})" if name \
        else f"{kind} of run {row['run_id']} at position {row['seq']} ({row['state']})"


def find_callback(store, runs, target, name=None, approval=False):
    """The callback row `t.callback(target, name = ...)` means: `target` is a callback's id
    (`RUN:SEQ`), a run of the test (its callbacks) or a callback's name (among every run's);
    of a run's or a name's, the one still open is chosen.
    Raises UserError saying what there is when none or several are."""
    run_part, _, seq = target.rpartition(":")
    if run_part in runs and seq.isdigit():  # a callback's own id, "RUN:SEQ" (callback()'s struct has it)
        row = store.get_deferred(run_part, int(seq))
        if row is None or row["builtin"] != "callback":
            raise UserError(f"t.callback(): run {run_part} has no callback at position {seq}")
        if approval and not json.loads(row["detail"]).get("approval"):
            raise UserError(f"t.approve()/t.reject(): {describe_callback(row)} is not an approval "
                            f"(callback(approval = True)); deliver its payload with t.callback()")
        return row
    rows = []
    by_run = target in runs
    for run_id in runs:
        if by_run and run_id != target:
            continue
        for e in store.journal(run_id):
            if e["builtin"] == "callback":
                row = store.get_deferred(run_id, e["seq"])
                if row is None:
                    continue
                cb_name = json.loads(row["detail"]).get("callback")
                wanted = name if by_run else target
                if wanted is None or cb_name == wanted:
                    rows.append(row)
    named = f" named {(name if by_run else target)!r}" if (name if by_run else target) else ""
    where = f"run {target}" if by_run else "the test's runs"
    open_rows = [r for r in rows if r["state"] == "waiting"]
    if not open_rows and len(rows) == 1:
        open_rows = rows  # (ended: delivering it says how, as the server's 410 or 200 would: expired, duplicate...)
    if not open_rows:
        others = "; ".join(describe_callback(r) for r in rows)
        raise UserError(f"t.callback(): {where} has no open callback{named}" + (
            f" (there is: {others})" if others else
            " (no callback() has been called yet; pass a run's handle or a callback's name)"))
    if len(open_rows) > 1:
        listed = "; ".join(describe_callback(r) for r in open_rows)
        raise UserError(f"t.callback(): {where} has {len(open_rows)} open callbacks{named}: {listed}; "
                        + ("pass name = ... to choose one" if by_run else "pass the run's handle and name = ..."))
    row = open_rows[0]
    if approval and not json.loads(row["detail"]).get("approval"):
        raise UserError(f"t.approve()/t.reject(): {describe_callback(row)} is not an approval (callback(approval = True)); "
                        f"deliver its payload with t.callback()")
    return row


def deliver_callback(store, clock, row, payload):
    """Complete the callback's row with `payload`: the outcome (completed, expired, void...)."""
    try:
        return complete_effect(store, row["run_id"], row["seq"], result=payload, clock=clock).outcome
    except (TypeError, ValueError) as e:
        raise UserError(f"t.callback(): the payload is not a JSON value: {e}") from None
