"""task(): an effect performed by a worker outside the process, in any language.

A deferred effect (engine/deferred.py): the gate records the task (its queue,
payload and idempotency key `<run id>:<sequence>`) and suspends the run; a
worker that completes it (engine/tasks.py; the server's /tasks routes) wakes the
run. Its journaled value is {"ok", "value", "error", "attempts"}.

`heartbeat =` (a duration) and `retry =` (a retry_policy) are kept in the task's
detail, only when given, so a call without them records (and digests) what it
did before they existed: the worker's lease never outlasts the heartbeat
interval, and a retryable fail is offered again under the policy
(engine/tasks.py).
"""

import json

from flowmetal import retry as retry_mod
from flowmetal.engine.effects.registry import DEFERRED, BuiltinError, Deferred, check, duration, effect


def _policy(args):
    if args.get("retry") is None:
        return None
    try:
        policy = retry_mod.RetryPolicy.from_args(args["retry"])
    except (ValueError, TypeError) as e:
        raise BuiltinError(f"task(): argument retry: {str(e).removeprefix('retry_policy: ')}") from None
    check(policy.retry_on is None, "task", "argument retry: retry_on does not apply to a task "
          "(the worker says whether a failure is retryable)")
    return policy


def _check_task(args):
    check(isinstance(args["queue"], str) and args["queue"], "task", "argument queue must be a non-empty string")
    try:
        json.dumps(args["payload"])
    except (TypeError, ValueError):
        check(False, "task", "argument payload must be a JSON value")
    duration("task", "timeout", args.get("timeout"))
    beat = duration("task", "heartbeat", args.get("heartbeat"))
    check(beat is None or beat > 0, "task", "argument heartbeat must be a duration longer than 0")
    _policy(args)
    check(isinstance(args.get("check", True), bool), "task", "argument check must be True or False")


@effect("task", DEFERRED, params={"timeout": None, "heartbeat": None, "retry": None, "check": True},
        validate=_check_task)
def task(args, ctx):
    detail = {"queue": args["queue"], "payload": args["payload"], "key": ctx.idempotency_key}
    beat = duration("task", "heartbeat", args.get("heartbeat"))
    if beat is not None:
        detail["heartbeat"] = beat
    policy = _policy(args)
    if policy is not None:
        detail["retry"] = policy.to_dict()
    return Deferred(detail, duration("task", "timeout", args.get("timeout")))
