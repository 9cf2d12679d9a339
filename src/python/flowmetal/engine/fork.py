"""`flowmetal fork` and `flowmetal retry`: a new run that starts from a prefix of another's journal.

The new run has the same function and arguments as the old one and a copy of its
first `at` journal entries; it is recorded with `forked_from` and `forked_at`.
Before anything is kept, the prefix is replayed with no effects (engine/replay.py)
on the chosen code: the old run's pinned code, or with `current` the files on
disk. When it diverges, the fork is refused naming the divergence, and nothing is
created (the run, its sources and its journal are one transaction that is rolled
back). Executed, the new run replays the prefix and continues live after it.

Policy (SPEC section 10):
- Signals of the old run are not carried over: those the prefix consumed are in
  its journal entries; any others stay with the old run. With `reapply_signals`
  (`fork --reapply-signals`), every signal the prefix did not consume (consumed by
  the old run after the fork point, or never consumed) is delivered again to the
  new run, in the order the old run received them, with their original send
  times; the old run keeps its own.
- Callbacks the prefix created (`callback()`) are created again for the new run,
  with the same name, approval flag and deadline but a URL of its own (a
  callback's URL is derived from its run and position; the old URL still answers
  for the old run). The new one waits for its own call; with `reapply_signals`, a
  callback the old run had already been called back on is carried over completed
  with that payload, as a signal is.
- A prefix may contain `spawn` entries only for children that have ended: a child
  still in flight belongs to the old run (and is cancelled with it); the fork is
  refused naming it. Ended children are shared: the new run's `wait` reads them.
- `retry` forks a failed run just before its failing entry: the last journal entry
  when it failed the run (it records an error, or its effect failed and `check = True`
  made that the run's error, "sh() failed: ..."), else the end of the journal (the
  program itself failed after its last effect); on the current files.
"""

import json
import os

from flowmetal.clock import SYSTEM
from flowmetal.engine.replay import replay_run
from flowmetal.engine.runs import create_run, load_target
from flowmetal.errors import UserError
from flowmetal.store.base import ENDED


class ForkRefused(UserError):
    """The prefix does not replay on the chosen code (nothing was created)."""


def signals_after(store, run_id, at):
    """The signals of run `run_id` that its first `at` journal entries did not consume, oldest first."""
    return [s for s in store.signals(run_id) if s["consumed_seq"] is None or s["consumed_seq"] > at]


def fork_run(store, run_ref, at, current=False, clock=SYSTEM, reapply_signals=False):
    """Create the fork of `run_ref` at `at` (pending, queued); returns its id. With
    `reapply_signals`, the signals the prefix did not consume are sent to it again."""
    source = store.find_run(run_ref)
    journal = store.journal(source["id"])
    if at < 0 or at > len(journal):
        raise UserError(f"--at {at}: run {source['id']} has {len(journal)} journal entries "
                        f"(fork at 0..{len(journal)})")
    prefix = journal[:at]
    for entry in prefix:
        if entry["status"] == "started":
            raise UserError(f"entry {entry['seq']} of run {source['id']} ({entry['builtin']}) is still open; "
                            f"fork at {entry['seq'] - 1} or earlier")
        if entry["builtin"] == "spawn" and entry["result"] is not None:
            child = store.get_run(json.loads(entry["result"]))
            if child is not None and child["state"] not in ENDED:
                raise UserError(f"entry {entry['seq']} of run {source['id']} spawned child run {child['id']}, "
                                f"which is still {child['state']}; a fork shares only ended children "
                                f"(fork at {entry['seq'] - 1} or earlier, or wait for it to end)")
    if current:
        if not source["root_dir"]:
            raise UserError(f"run {source['id']} does not record its workspace root; cannot fork on current files")
        _, texts = load_target(source["root_dir"], os.path.join(source["root_dir"], source["file"]),
                               source["function"])
        where = f"the current files under {source['root_dir']}"
    else:
        texts = store.pinned_sources(source["id"])
        where = f"the pinned code of run {source['id']}"
    timeout = None
    if source["deadline"] is not None:
        timeout = source["deadline"] - source["created_at"]  # the same budget, from the fork's creation
    with store.transaction():  # (a refusal rolls back the run, its sources and its journal)
        run_id = create_run(store, clock, file=source["file"], function=source["function"],
                            args=json.loads(source["args"]), texts=texts, root_dir=source["root_dir"],
                            timeout=timeout,
                            posargs=json.loads(source["posargs"]) if source.get("posargs") else None)
        store.fork_journal(source["id"], run_id, at)
        report = replay_run(store, store.get_run(run_id), current=False)
        if not report.ok:
            detail = report.text.split("\n", 1)[-1].replace(run_id, source["id"])  # (the new id never exists)
            raise ForkRefused(f"cannot fork run {source['id']} at {at}: its first {at} journal entries "
                              f"do not replay on {where}:\n{detail}")
        if reapply_signals:
            for s in signals_after(store, source["id"], at):
                store.insert_signal(run_id, s["name"], s["payload"], s["sent_at"])
        _copy_callbacks(store, source["id"], run_id, prefix, reapply_signals)
    return run_id


def _copy_callbacks(store, source_id, run_id, prefix, completed):
    """The `deferred` rows of the prefix's callback() entries, for the new run: waiting, under
    the new run's token; with `completed`, one the old run was called back on keeps its payload."""
    from flowmetal.engine import deferred

    secret = None
    for entry in prefix:
        if entry["builtin"] != "callback":
            continue
        old = store.get_deferred(source_id, entry["seq"])
        if old is None:
            continue
        if secret is None:  # (where the gate finds it: next to the database)
            try:
                secret = deferred.store_secret(store)
            except (UserError, OSError) as e:
                raise UserError(f"cannot fork run {source_id}: its prefix created a callback, and the server "
                                f"secret its new URL is derived from cannot be read: {e}") from None
        token = deferred.callback_token(secret, run_id, entry["seq"])
        store.insert_deferred({"run_id": run_id, "seq": entry["seq"], "builtin": "callback", "queue": None,
                               "detail": old["detail"], "deadline": old["deadline"], "created_at": old["created_at"],
                               "token_hash": deferred.token_hash(token)})
        if completed and old["state"] == "completed":
            store.complete_deferred(run_id, entry["seq"], old["result"], old["error"], old["payload_hash"],
                                    old["completed_at"])


def retry_point(store, run_ref):
    """(run, position) where `retry` forks a failed run."""
    source = store.find_run(run_ref)
    if source["state"] != "failed":
        raise UserError(f"run {source['id']} is {source['state']}, not failed; retry takes a failed run "
                        f"(fork RUN --at SEQ forks any run)")
    journal = store.journal(source["id"])
    if journal and failed_the_run(source, journal[-1]):
        return source, journal[-1]["seq"] - 1
    return source, len(journal)


def failed_the_run(run, entry):
    """Whether journal entry `entry` is what failed `run`: it records an error, or its effect
    completed with a failure that `check = True` turned into the run's error
    ("sh() failed: exit code 3")."""
    if entry["error"] is not None:
        return True
    return (run["error"] or "").startswith(f"{entry['builtin']}() failed")


def retry_run(store, run_ref, clock=SYSTEM, reapply_signals=False):
    """Fork a failed run before its failing entry, on the current files; returns (new id, position)."""
    source, at = retry_point(store, run_ref)
    return fork_run(store, source["id"], at, current=True, clock=clock, reapply_signals=reapply_signals), at
