"""Operations on runs that are not execution: create, signal, cancel, finish.

Each is one transaction over the store; the state changes themselves are in
engine/lifecycle.py.
"""

import json

from flowmetal.codec import canonical
from flowmetal.engine import lifecycle
from flowmetal.errors import UserError
from flowmetal.lang.loader import Program, top_level_functions
from flowmetal.lang.refs import parse_function_value
from flowmetal.lang.workspace import DiskSources, file_name
from flowmetal.store.base import ENDED

MAX_SIGNAL_BYTES = 256 * 1024


def load_target(root, path, function):
    """Load a workflow file from disk for a new run; returns (file name, texts to pin)."""
    name = file_name(root, path)
    program = Program(DiskSources(root))
    program.load(name)
    if not program.function_exists(name, function):
        defined = sorted(n for n in top_level_functions(program.texts[name]) if not n.startswith("_"))
        raise UserError(f"{name} has no top-level function {function!r}"
                        + (f" (it defines: {', '.join(defined)})" if defined else ""))
    return name, dict(program.texts)


def create_run(store, clock, *, file, function, args, texts, root_dir=None, timeout=None,
               parent_id=None, root_id=None, continued_from=None, schedule=None, fire_time=None,
               posargs=None, run_id=None):
    """Insert a pending run with its pinned sources (call inside a transaction or alone)."""
    return lifecycle.create(store, clock, file=file, function=function, args=args, texts=texts,
                            root_dir=root_dir, timeout=timeout, parent_id=parent_id, root_id=root_id,
                            continued_from=continued_from, schedule=schedule, fire_time=fire_time,
                            posargs=posargs, run_id=run_id)


def send_signal(store, clock, run_ref, name, payload_text):
    if payload_text is None:
        payload_text = "null"
    if len(payload_text.encode("utf-8")) > MAX_SIGNAL_BYTES:
        raise UserError(f"signal payload is larger than the limit of {MAX_SIGNAL_BYTES // 1024} KiB")
    try:
        payload = json.loads(payload_text)
    except json.JSONDecodeError as e:
        raise UserError(f"signal payload is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    run = store.find_run(run_ref)
    with store.transaction():
        run = store.get_run(run["id"])
        if run["state"] in ENDED:
            raise UserError(f"run {run['id']} has ended ({run['state']}); it can receive no signal")
        store.insert_signal(run["id"], name, canonical(payload), clock.now())
        lifecycle.signal_arrived(store, run, name)
    return run["id"]


def cancel_run(store, clock, run_ref, state="cancelled"):
    """Cancel a run and its descendants. Waiting and pending runs end at once;
    running ones are asked to stop at their next effect (their owner sees it)."""
    run = store.find_run(run_ref)
    if run["state"] in ENDED:
        raise UserError(f"run {run['id']} has already ended ({run['state']})")
    lifecycle.cancel_tree(store, clock, run["id"], state)
    return run["id"]


notify_parent = lifecycle.notify_parent  # (the name callers used before engine/lifecycle.py)


def last_incarnation(store, run):
    """The run that `run` continued as (continue_as_new), and so on: the one whose
    outcome is the outcome of the chain. A handle names the chain's first run."""
    while run.get("continued_as"):
        following = store.get_run(run["continued_as"])
        if following is None:  # (pruned)
            break
        run = following
    return run


def child_result(run):
    state = run["state"]
    value = json.loads(run["result"]) if run["result"] is not None else None
    return {"id": run["id"], "ok": state == "completed", "value": value if state == "completed" else None,
            "error": run["error"] if state != "completed" else None, "state": state}


def resolve_ref(ref):
    """What spawn() passes for a function ("jobs/x.star.child") -> (file, function)."""
    return tuple(parse_function_value(ref))

