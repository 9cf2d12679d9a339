"""/api/v1/tasks: outside workers claim, renew and finish the `task()`s of their queues
(engine/tasks.py), in the shapes of SPEC section 8. A claim long-polls: it returns as
soon as a task is offered (a database change wakes it), and looks again every RECHECK
seconds for leases that expired and retry delays that ended meanwhile."""

import time

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from flowmetal.engine import deferred, tasks
from flowmetal.server.api import Endpoint, Param
from flowmetal.server.errors import ApiError
from flowmetal.server.routes.common import ctx, json_object, respond

_S = {"type": "string"}
ERROR = {"$ref": "#/components/schemas/Error"}
TASK_ID = Param("id", "path", _S, "the task's id, `<run id>:<sequence>` (also its idempotency key)", required=True)
MAX_WAIT = 60.0
STATUS = {deferred.COMPLETED: 200, deferred.DUPLICATE: 200, deferred.CONFLICT: 409, deferred.EXPIRED: 410,
          deferred.VOID: 410, deferred.UNKNOWN: 404}


RECHECK = 1.0  # a waiting claim also looks again this often: a lease expiring or a retry delay ending
MAX_TASKS = 100


def _seconds(doc, name, default, low, high):
    value = doc.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ApiError(400, f"{name}: expected a number of seconds from {low:g} to {high:g}")
    return float(value)


def _token(doc):
    token = doc.get("lease_token")
    if not isinstance(token, str):
        raise ApiError(400, "lease_token: expected the lease token the claim gave (a string)")
    return token


async def claim(request):
    c = ctx(request)
    doc = await json_object(request, ("worker", "queues", "max", "wait", "lease"))
    queues, worker, most = doc.get("queues"), doc.get("worker"), doc.get("max", 1)
    if not isinstance(queues, list) or not queues or not all(isinstance(q, str) and q for q in queues) \
            or len(queues) > MAX_TASKS:
        raise ApiError(400, f"queues: expected a list of 1 to {MAX_TASKS} queue names (non-empty strings)")
    if worker is not None and (not isinstance(worker, str) or len(worker) > 200):
        raise ApiError(400, "worker: expected the worker's id (a string of at most 200 characters)")
    if isinstance(most, bool) or not isinstance(most, int) or not 1 <= most <= MAX_TASKS:
        raise ApiError(400, f"max: expected an integer from 1 to {MAX_TASKS}")
    wait = _seconds(doc, "wait", 0, 0, MAX_WAIT)
    lease = _seconds(doc, "lease", tasks.LEASE_SECONDS, 1, 86400)
    end = time.monotonic() + wait
    while True:
        got = await run_in_threadpool(tasks.claim_many, c.store, queues, c.clock, lease, worker, most)
        if got:
            return respond({"tasks": got})
        left = end - time.monotonic()
        if left <= 0 or c.changes.stopping.is_set():
            return Response(status_code=204)
        await c.changes.wait(min(left, RECHECK))


async def heartbeat(request):
    c = ctx(request)
    doc = await json_object(request, ("lease_token", "lease"))
    seconds = _seconds(doc, "lease", 0, 0, 86400) or None  # (none: what the claim asked)
    try:
        until = await run_in_threadpool(tasks.heartbeat, c.store, request.path_params["id"], _token(doc),
                                        c.clock, seconds)
    except tasks.StaleLease as e:
        raise ApiError(409, str(e)) from None
    return respond({"lease_until": until})


async def _finish(request, fields):
    c = ctx(request)
    doc = await json_object(request, fields)
    kw = {}
    if "error" in fields:
        if not isinstance(doc.get("error"), str):
            raise ApiError(400, "error: expected a message (a string)")
        if not isinstance(doc.get("retryable", False), bool):
            raise ApiError(400, "retryable: expected true or false")
        kw = {"error": doc["error"], "retryable": doc.get("retryable", False)}
    else:
        kw = {"result": doc.get("result")}
    try:
        done = await run_in_threadpool(tasks.finish, c.store, request.path_params["id"], _token(doc), c.clock, **kw)
    except tasks.StaleLease as e:
        raise ApiError(409, str(e)) from None
    if done.outcome == tasks.RETRYING:
        return respond({"outcome": done.outcome, "message": done.message, "retry_at": done.retry_at})
    status = STATUS[done.outcome]
    if status >= 400:
        raise ApiError(status, done.message)
    outcome = "failed" if "error" in kw and done.outcome == deferred.COMPLETED else done.outcome
    return respond({"outcome": outcome, "message": done.message})


async def complete(request):
    return await _finish(request, ("lease_token", "result"))


async def fail(request):
    return await _finish(request, ("lease_token", "error", "retryable"))


_NUM = {"type": "number"}
TASK = {"type": "object", "required": ["id", "queue", "payload", "attempt", "lease_token", "idempotency_key",
                                       "lease_until"], "properties": {
    "id": _S, "queue": _S, "payload": {}, "attempt": {"type": "integer"}, "lease_token": _S,
    "idempotency_key": _S, "lease_until": _NUM, "heartbeat": {**_NUM, "nullable": True},
    "deadline": {**_NUM, "nullable": True}}}
CLAIMED = {"type": "object", "required": ["tasks"],
           "properties": {"tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}}}}
DONE = {"type": "object", "required": ["outcome", "message"], "properties": {
    "outcome": {"type": "string", "enum": ["completed", "duplicate", "failed", "retrying"]}, "message": _S,
    "retry_at": _NUM}}
SCHEMAS = {"Task": TASK}
LEASE_TOKEN = {"lease_token": _S}

ENDPOINTS = [
    Endpoint("POST", "/tasks/claim", claim,
             "Lease up to `max` tasks of the queues (long-polls up to `wait` seconds, at most 60)",
             scope="write", tag="tasks",
             body={"type": "object", "required": ["queues"], "properties": {
                 "worker": _S, "queues": {"type": "array", "items": _S}, "max": {"type": "integer"},
                 "wait": _NUM, "lease": _NUM}},
             responses={200: ("tasks, leased", CLAIMED), 204: ("no task within `wait`", None),
                        400: ("a bad request", ERROR)}),
    Endpoint("POST", "/tasks/{id}/heartbeat", heartbeat, "Renew a task's lease", scope="write", tag="tasks",
             params=[TASK_ID], body={"type": "object", "required": ["lease_token"],
                                     "properties": {**LEASE_TOKEN, "lease": _NUM}},
             responses={200: ("renewed", {"type": "object", "properties": {"lease_until": _NUM}}),
                        400: ("a bad request", ERROR), 409: ("a stale or wrong lease", ERROR)}),
    Endpoint("POST", "/tasks/{id}/complete", complete, "Complete a task with its result", scope="write",
             tag="tasks", params=[TASK_ID],
             body={"type": "object", "required": ["lease_token"], "properties": {**LEASE_TOKEN, "result": {}}},
             responses={200: ("completed (or completed before with this result)", DONE), 400: ("a bad request", ERROR),
                        404: ("unknown", ERROR),
                        409: ("a stale or wrong lease, or completed before differently", ERROR),
                        410: ("expired, or its run has ended", ERROR)}),
    Endpoint("POST", "/tasks/{id}/fail", fail,
             "Fail a task's attempt; a retryable one is offered again under the task's retry policy",
             scope="write", tag="tasks", params=[TASK_ID],
             body={"type": "object", "required": ["lease_token", "error"], "properties": {
                 **LEASE_TOKEN, "error": _S, "retryable": {"type": "boolean"}}},
             responses={200: ("failed, or to be retried (`retrying`, `retry_at`)", DONE),
                        400: ("a bad request", ERROR), 404: ("unknown", ERROR),
                        409: ("a stale or wrong lease, or completed before differently", ERROR),
                        410: ("expired, or its run has ended", ERROR)}),
]
