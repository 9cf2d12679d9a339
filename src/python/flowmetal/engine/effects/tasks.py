"""task(): an effect performed by a worker outside the process, in any language.

A deferred effect (engine/deferred.py): the gate records the task (its queue,
payload and idempotency key `<run id>:<sequence>`) and suspends the run; a
worker that completes it (complete_effect; the server's /tasks routes) wakes the
run. Its journaled value is {"ok", "value", "error", "attempts"}.
"""

import json

from flowmetal.engine.effects.registry import DEFERRED, Deferred, check, duration, effect


def _check_task(args):
    check(isinstance(args["queue"], str) and args["queue"], "task", "argument queue must be a non-empty string")
    try:
        json.dumps(args["payload"])
    except (TypeError, ValueError):
        check(False, "task", "argument payload must be a JSON value")
    duration("task", "timeout", args.get("timeout"))
    check(isinstance(args.get("check", True), bool), "task", "argument check must be True or False")


@effect("task", DEFERRED, params={"timeout": None, "check": True}, validate=_check_task)
def task(args, ctx):
    return Deferred({"queue": args["queue"], "payload": args["payload"], "key": ctx.idempotency_key},
                    duration("task", "timeout", args.get("timeout")))
