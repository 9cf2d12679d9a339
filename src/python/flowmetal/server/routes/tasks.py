"""/api/v1/tasks: outside workers claim, renew and finish the `task()`s of a queue
(engine/tasks.py). A claim long-polls: it returns as soon as a task is offered."""

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


async def claim(request):
    c = ctx(request)
    doc = await json_object(request, ("queue", "wait", "lease"))
    queue, wait, lease = doc.get("queue"), doc.get("wait", 0), doc.get("lease", tasks.LEASE_SECONDS)
    if not isinstance(queue, str) or not queue:
        raise ApiError(400, "queue must be a non-empty string")
    for name, value in (("wait", wait), ("lease", lease)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ApiError(400, f"{name} must be a number of seconds")
    if lease < 1:
        raise ApiError(400, "lease must be at least 1 second")
    end = time.monotonic() + min(float(wait), MAX_WAIT)
    while True:
        task = await run_in_threadpool(tasks.claim, c.store, queue, c.clock, float(lease))
        if task is not None:
            return respond(task)
        left = end - time.monotonic()
        if left <= 0 or c.changes.stopping.is_set():
            return Response(status_code=204)
        await c.changes.wait(left)


async def heartbeat(request):
    c = ctx(request)
    doc = await json_object(request, ("lease", "lease_seconds"))
    seconds = doc.get("lease_seconds") or tasks.LEASE_SECONDS
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds <= 86400:
        raise ApiError(400, "lease_seconds: expected a number of seconds, more than 0 and at most 86400")
    if not isinstance(doc.get("lease"), (str, type(None))):
        raise ApiError(400, "lease: expected the lease token (a string)")
    try:
        until = await run_in_threadpool(tasks.heartbeat, c.store, request.path_params["id"], doc.get("lease"),
                                        c.clock, float(seconds))
    except tasks.StaleLease as e:
        raise ApiError(409, str(e)) from None
    return respond({"lease_expires": until})


async def _finish(request, fields, **kw):
    c = ctx(request)
    doc = await json_object(request, fields)
    if "error" in fields and not isinstance(doc.get("error"), str):
        raise ApiError(400, "error must be a string")
    try:
        done = await run_in_threadpool(tasks.finish, c.store, request.path_params["id"], doc.get("lease"), c.clock,
                                       **{k: doc.get(k) for k in fields if k != "lease"})
    except tasks.StaleLease as e:
        raise ApiError(409, str(e)) from None
    status = STATUS[done.outcome]
    if status >= 400:
        raise ApiError(status, done.message)
    return respond({"outcome": done.outcome, "message": done.message})


async def complete(request):
    return await _finish(request, ("lease", "result"))


async def fail(request):
    return await _finish(request, ("lease", "error"))


TASK = {"type": "object", "properties": {
    "id": _S, "queue": _S, "payload": {}, "attempt": {"type": "integer"}, "lease": _S,
    "lease_expires": {"type": "number"}}}
DONE = {"type": "object", "properties": {"outcome": _S, "message": _S}}
SCHEMAS = {"Task": TASK}

ENDPOINTS = [
    Endpoint("POST", "/tasks/claim", claim, "Lease the next task of a queue (long-polls up to `wait` seconds)",
             scope="write", tag="tasks",
             body={"type": "object", "required": ["queue"], "properties": {
                 "queue": _S, "wait": {"type": "number"}, "lease": {"type": "number"}}},
             responses={200: ("a task, leased", {"$ref": "#/components/schemas/Task"}),
                        204: ("no task within `wait`", None), 400: ("a bad request", ERROR)}),
    Endpoint("POST", "/tasks/{id}/heartbeat", heartbeat, "Renew a task's lease", scope="write", tag="tasks",
             params=[TASK_ID], body={"type": "object", "properties": {"lease": _S, "lease_seconds": {"type": "number"}}},
             responses={200: ("renewed", {"type": "object", "properties": {"lease_expires": {"type": "number"}}}),
                        400: ("a bad request", ERROR), 409: ("a stale or wrong lease", ERROR)}),
    Endpoint("POST", "/tasks/{id}/complete", complete, "Complete a task with its result", scope="write",
             tag="tasks", params=[TASK_ID],
             body={"type": "object", "properties": {"lease": _S, "result": {}}},
             responses={200: ("completed (or completed before with this result)", DONE), 400: ("a bad request", ERROR),
                        404: ("unknown", ERROR),
                        409: ("a stale or wrong lease, or completed before differently", ERROR),
                        410: ("expired, or its run has ended", ERROR)}),
    Endpoint("POST", "/tasks/{id}/fail", fail, "Fail a task with an error message", scope="write", tag="tasks",
             params=[TASK_ID], body={"type": "object", "properties": {"lease": _S, "error": _S}},
             responses={200: ("failed", DONE), 400: ("a bad request", ERROR), 404: ("unknown", ERROR),
                        409: ("a stale or wrong lease, or completed before differently", ERROR),
                        410: ("expired, or its run has ended", ERROR)}),
]
