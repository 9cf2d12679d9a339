"""/api/v1/schedules: the scheduler's schedules, as `flowmetal schedule --list --json`.

Pause, resume and trigger plug in here as endpoints once their library
functions exist (flowmetal.schedule.commands).
"""

from starlette.concurrency import run_in_threadpool

from flowmetal.server.api import Endpoint, ref
from flowmetal.server.routes.common import ctx, respond

_S = {"type": "string"}


def schedules_document(store, specs, now):
    from flowmetal.schedule.views import listing

    return {"schedules": listing(store, specs, now)}


async def list_(request):
    c = ctx(request)
    return respond(await run_in_threadpool(schedules_document, c.store, c.declared_schedules(), c.clock.now()))


FIRE = {"type": "object", "properties": {
    "fire_time": _S, "through": {**_S, "nullable": True}, "action": _S, "reason": {**_S, "nullable": True},
    "run_id": {**_S, "nullable": True}, "state": {**_S, "nullable": True},
    "on_failure_run": {**_S, "nullable": True}}}

SCHEMAS = {
    "Schedule": {
        "type": "object", "required": ["name", "status", "cron", "timezone", "next", "counts"],
        "properties": {
            "name": _S, "status": {**_S, "description": "active, new, disabled, removed or not loaded"},
            "cron": _S, "timezone": _S, "enabled": {"type": "boolean"}, "run": _S, "file": _S,
            "line": {"type": "integer"}, "catchup": _S, "overlap": _S,
            "next": {"type": "array", "items": _S, "description": "the next fire times, local ISO 8601"},
            "last_fire": {"type": "object", "nullable": True},
            "since": {**_S, "nullable": True},
            "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            "recent": {"type": "array", "items": ref("Fire")},
        }},
    "Fire": FIRE,
}

ENDPOINTS = [
    Endpoint("GET", "/schedules", list_, "The schedules, with next fires and recent fire records", tag="schedules",
             responses={200: ("every schedule the database or this server's PATHs know",
                              {"type": "object", "required": ["schedules"],
                               "properties": {"schedules": {"type": "array", "items": ref("Schedule")}}})}),
]
