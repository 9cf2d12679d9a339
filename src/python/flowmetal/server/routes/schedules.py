"""/api/v1/schedules: the scheduler's schedules, as `flowmetal schedule --list --json`,
and (scope admin) pause, resume and trigger, the library calls of
`flowmetal schedule pause|resume|trigger` (flowmetal.schedule.commands).

Pause and resume answer 200 with the schedule as the list shows it plus `changed`
(false when it already was paused, or not paused); trigger answers 201 with the
fire it recorded (reason "manual") and the run it started, which this server's
worker executes. An unknown schedule is 404; a removed one, or pausing one
disabled in its file, is 409.
"""

from starlette.concurrency import run_in_threadpool

from flowmetal.server import service
from flowmetal.server.api import ERROR, Endpoint, Param, ref
from flowmetal.server.routes.common import ctx, respond

_S = {"type": "string"}


def schedules_document(store, specs, now):
    from flowmetal.schedule.views import listing

    return {"schedules": listing(store, specs, now)}


async def list_(request):
    c = ctx(request)
    return respond(await run_in_threadpool(schedules_document, c.store, c.declared_schedules(), c.clock.now()))


async def pause(request):
    c = ctx(request)
    return respond(await run_in_threadpool(service.pause_schedule, c.store, c.declared_schedules(),
                                           request.path_params["name"], c.clock.now()))


async def resume(request):
    c = ctx(request)
    return respond(await run_in_threadpool(service.resume_schedule, c.store, c.declared_schedules(),
                                           request.path_params["name"], c.clock.now()))


async def trigger(request):
    c = ctx(request)
    doc = await run_in_threadpool(service.trigger_schedule, c.store, c.root, request.path_params["name"],
                                  c.clock.now())
    return respond(doc, 201, {"Location": f"/api/v1/runs/{doc['run_id']}"})


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
    "ScheduleChange": {"allOf": [ref("Schedule"), {
        "type": "object", "required": ["changed"],
        "properties": {"changed": {"type": "boolean",
                                   "description": "false: it already was paused (pause) or not paused (resume)"}}}]},
    "Trigger": {"type": "object", "required": ["schedule", "fire_time", "nominal", "run_id", "run"],
                "properties": {"schedule": _S, "fire_time": {**_S, "description": "the manual fire's time, ISO UTC"},
                               "nominal": {"type": "number", "description": "the same, in epoch seconds"},
                               "run_id": _S, "run": ref("Run")}},
}

NAME = Param("name", "path", {"type": "string", "minLength": 1}, "the schedule's name", required=True)
_404 = ("no schedule of that name is known to the database", ERROR)

ENDPOINTS = [
    Endpoint("GET", "/schedules", list_, "The schedules, with next fires and recent fire records", tag="schedules",
             responses={200: ("every schedule the database or this server's PATHs know",
                              {"type": "object", "required": ["schedules"],
                               "properties": {"schedules": {"type": "array", "items": ref("Schedule")}}})}),
    Endpoint("POST", "/schedules/{name}/pause", pause, "Pause a schedule: its fire times pass, recorded as missed",
             scope="admin", tag="schedules", params=[NAME],
             responses={200: ("the schedule, now paused", ref("ScheduleChange")), 404: _404,
                        409: ("the schedule was removed from its file, or is disabled there", ERROR)}),
    Endpoint("POST", "/schedules/{name}/resume", resume, "Resume a paused schedule from now on (no catch-up)",
             scope="admin", tag="schedules", params=[NAME],
             responses={200: ("the schedule, no longer paused", ref("ScheduleChange")), 404: _404,
                        409: ("the schedule was removed from its file", ERROR)}),
    Endpoint("POST", "/schedules/{name}/trigger", trigger, "Start a run of a schedule now, recorded as a manual fire",
             scope="admin", tag="schedules", params=[NAME],
             responses={201: ("the fire recorded and the run started (pending)", ref("Trigger")), 404: _404,
                        409: ("the schedule was removed, or its stored declaration cannot start a run", ERROR)}),
]
