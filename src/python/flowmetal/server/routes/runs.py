"""/api/v1/runs: start, list, show, journal, logs (JSON or a live SSE stream),
long-polled results, cancel and signals."""

import asyncio
import json
import math
import time

from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from flowmetal.durations import parse_duration
from flowmetal.engine.runs import MAX_SIGNAL_BYTES
from flowmetal.server import service
from flowmetal.server.api import ERROR, Content, Endpoint, Param, ref
from flowmetal.server.errors import ApiError
from flowmetal.server.routes.common import (
    body_text, ctx, json_object, query_int, query_number, query_text, respond,
)
from flowmetal.store.base import ENDED, RUN_STATES

MAX_WAIT = 60.0
KEEPALIVE = 15.0  # seconds between SSE comments while nothing happens
IDEMPOTENCY_KEY_MAX = 255
DURATION = r"^([0-9]{1,9}(\.[0-9]{1,9})?(ms|s|m|h|d|w))+$"


async def start(request):
    c = ctx(request)
    key = request.headers.get("idempotency-key")
    if key is not None and not (0 < len(key) <= IDEMPOTENCY_KEY_MAX and key.isprintable() and key.isascii()):
        raise ApiError(400, f"Idempotency-Key: expected 1 to {IDEMPOTENCY_KEY_MAX} printable ASCII characters")
    doc = await json_object(request, ("target", "args", "timeout"))
    target, args, timeout = doc.get("target"), doc.get("args", {}), doc.get("timeout")
    if not isinstance(target, str):
        raise ApiError(400, 'target: expected a string "FILE.star:FUNCTION"')
    if not isinstance(args, dict):
        raise ApiError(400, "args: expected a JSON object of keyword arguments")
    seconds = None
    if "timeout" in doc and timeout is None:
        raise ApiError(400, "timeout: leave it out for no timeout (null is not a duration)")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float, str)):
            raise ApiError(400, 'timeout: expected seconds or a duration like "10m"')
        try:
            seconds = parse_duration(timeout, "timeout")
        except (ValueError, TypeError) as e:
            raise ApiError(400, str(e)) from None
        if not math.isfinite(seconds) or seconds > 100 * 365 * 86400:
            raise ApiError(400, f"timeout {timeout!r}: at most 100 years")
    run, created = await run_in_threadpool(service.start_run, c.store, c.clock, c.root, target=target, args=args,
                                           timeout=seconds, idempotency_key=key)
    doc = service.run_json(run)
    return respond(doc, 201 if created else 200, {"Location": f"/api/v1/runs/{run['id']}"})


async def list_(request):
    c = ctx(request)
    limit = query_int(request, "limit", 50, 1, service.MAX_PAGE)
    page = await run_in_threadpool(
        service.list_runs, c.store, state=query_text(request, "state"), target=query_text(request, "target"),
        schedule=query_text(request, "schedule"), parent=query_text(request, "parent"), limit=limit,
        cursor=query_text(request, "cursor"), since=query_text(request, "since"), until=query_text(request, "until"),
        now=c.clock.now())
    return respond(page)


async def show(request):
    c = ctx(request)
    return respond(await run_in_threadpool(service.show, c.store, request.path_params["id"]))


async def journal(request):
    c = ctx(request)
    after = query_int(request, "after", 0, 0, 2**32)
    return respond(await run_in_threadpool(service.journal, c.store, request.path_params["id"], after))


async def logs(request):
    c = ctx(request)
    run = await run_in_threadpool(c.store.find_run, request.path_params["id"])
    header = service.parse_log_cursor(request.headers.get("last-event-id"))  # (a malformed one is 400, always)
    after = service.parse_log_cursor(query_text(request, "after")) if query_text(request, "after") else header
    if "text/event-stream" in request.headers.get("accept", ""):
        return StreamingResponse(_stream(c, run["id"], after), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    lines, nxt = await run_in_threadpool(service.logs, c.store, run["id"], after)
    return respond({"run_id": run["id"], "lines": lines, "next": nxt})


async def _stream(c, run_id, after):
    """Server-Sent Events: one `log` event per line (its id is the cursor), then `end`
    with the run's state once it has ended; comments keep idle connections open."""
    last_sent = time.monotonic()
    while True:
        mark = _mark(c.changes)
        run = await run_in_threadpool(c.store.get_run, run_id)  # read before the lines: none is missed
        lines, _ = await run_in_threadpool(service.logs, c.store, run_id, after)
        for line in lines:
            yield f"id: {line['cursor']}\nevent: log\ndata: {json.dumps(line)}\n\n"
            after = int(line["cursor"])
            last_sent = time.monotonic()
        if run is None or run["state"] in ENDED:
            state = run["state"] if run else "pruned"
            yield f"event: end\ndata: {json.dumps({'run_id': run_id, 'state': state})}\n\n"
            return
        if c.changes.stopping.is_set():
            yield "event: shutdown\ndata: {}\n\n"
            return
        if time.monotonic() - last_sent >= KEEPALIVE:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await _wait(c.changes, mark, KEEPALIVE)


async def result(request):
    c = ctx(request)
    wait = query_number(request, "wait", 0.0, 0.0, MAX_WAIT)
    run = await run_in_threadpool(c.store.find_run, request.path_params["id"])
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        mark = _mark(c.changes)
        ended, doc = await run_in_threadpool(service.outcome, c.store, run["id"])
        left = deadline - asyncio.get_running_loop().time()
        if ended or left <= 0 or c.changes.stopping.is_set():
            return respond(doc, 200 if ended else 202)
        await _wait(c.changes, mark, left)


def _mark(changes):
    """The change event to wait on, taken BEFORE looking at the database. `Changes.wait` waits on
    the event current when it is called, so a change that lands between the look and the wait
    (the run ends while the look runs in the threadpool) was lost: the waiter slept until the
    next change or its timeout (seen: a long-polled result answering after its whole 30 s wait,
    on an idle server). Waiting on the event taken before the look, that change wakes it."""
    return changes.event


async def _wait(changes, mark, timeout):
    if mark is None or changes.stopping.is_set():  # (before the lifespan started the watcher)
        return await changes.wait(timeout)
    try:
        await asyncio.wait_for(mark.wait(), timeout)
    except asyncio.TimeoutError:
        pass


async def cancel(request):
    c = ctx(request)
    return respond(await run_in_threadpool(service.cancel, c.store, c.clock, request.path_params["id"]))


async def signal(request):
    c = ctx(request)
    text = await body_text(request)
    if len(text.encode("utf-8")) > MAX_SIGNAL_BYTES:
        raise ApiError(413, f"a signal's payload is limited to {MAX_SIGNAL_BYTES // 1024} KiB")
    if not text.strip():
        text = "null"
    name = request.path_params["name"]
    if not 0 < len(name) <= 200:
        raise ApiError(400, "signal name: expected 1 to 200 characters")
    from flowmetal.server.routes.common import parse_json

    parse_json(text, "the signal's payload")  # 400 for malformed JSON before anything is stored
    doc = await run_in_threadpool(service.signal, c.store, c.clock, request.path_params["id"], name, text)
    return respond(doc)


# --- schemas and the route table --------------------------------------------------------

_S, _N, _I = {"type": "string"}, {"type": "number"}, {"type": "integer"}


def _nullable(schema):
    return {**schema, "nullable": True}


RUN = {
    "type": "object",
    "required": ["id", "file", "function", "args", "state", "created_at"],
    "properties": {
        "id": _S, "file": _S, "function": _S, "args": {"type": "object"},
        "posargs": _nullable({"type": "array", "items": {}}),
        "state": {"type": "string", "enum": list(RUN_STATES)},
        "result": {"description": "the function's return value (any JSON value) once completed"},
        "error": _nullable(_S), "created_at": _N, "started_at": _nullable(_N), "ended_at": _nullable(_N),
        "updated_at": _nullable(_N), "root_dir": _nullable(_S), "parent_id": _nullable(_S),
        "root_id": _nullable(_S), "continued_from": _nullable(_S), "continued_as": _nullable(_S),
        "schedule": _nullable(_S), "fire_time": _nullable(_N),
        "waiting_for": _nullable({"type": "object", "description": "kind: timer, signal, children or effect"}),
        "wake_at": _nullable(_N), "deadline": _nullable(_N), "cancel_requested": _nullable(_S),
        "owner": _nullable(_S), "lease_expires": _nullable(_N), "executions": _I, "num": _nullable(_I),
    },
}
ENTRY = {
    "type": "object",
    "required": ["run_id", "seq", "builtin", "args", "status", "started_at"],
    "properties": {
        "run_id": _S, "seq": _I, "builtin": _S, "args": {}, "digest": _S,
        "status": {"type": "string", "description": "started, completed or failed"},
        "result": {}, "error": _nullable(_S), "data": {}, "started_at": _N, "ended_at": _nullable(_N),
        "reexecuted": _I,
    },
}
SCHEMAS = {
    "Run": RUN,
    "RunDocument": {**RUN, "required": [*RUN["required"], "journal", "children"],
                    "properties": {**RUN["properties"], "journal": {"type": "array", "items": ref("JournalEntry")},
                                   "children": {"type": "array", "items": _S}}},
    "JournalEntry": ENTRY,
    "LogLine": {"type": "object", "required": ["cursor", "seq", "n", "time", "stream", "line"],
                "properties": {"cursor": _S, "seq": _I, "n": _I, "time": _N, "stream": _S, "line": _S}},
    "NewRun": {"type": "object", "required": ["target"], "additionalProperties": False,
               "properties": {"target": {"type": "string", "example": "hello.star:main",
                                         "description": "FILE.star:FUNCTION, FILE relative to the workspace root"},
                              "args": {"type": "object", "description": "keyword arguments (JSON values)"},
                              "timeout": {"oneOf": [{"type": "number", "minimum": 0, "maximum": 3153600000},
                                                     {"type": "string", "pattern": DURATION}],
                                          "description": 'seconds, or a duration like "10m"'}}},
}

RUN_ID = Param("id", "path", _S, "a run id or any unique prefix of one")
_404 = ("no run has that id or prefix", ERROR)
_400 = ("a malformed request: the message says what", ERROR)
_409 = ("the run has already ended", ERROR)

ENDPOINTS = [
    Endpoint("POST", "/runs", start, "Queue a run", scope="write", body=ref("NewRun"),
             params=[Param("Idempotency-Key", "header", {"type": "string", "maxLength": IDEMPOTENCY_KEY_MAX},
                           "the same key returns the same run (200) instead of making another")],
             responses={201: ("the new run, pending", ref("Run")),
                        200: ("the run made earlier with this Idempotency-Key", ref("Run")),
                        400: ("malformed JSON, a wrong type, an unknown file or function, a file that fails "
                              "to load", ERROR),
                        409: ("the Idempotency-Key was used for a different request", ERROR)}),
    Endpoint("GET", "/runs", list_, "List runs, newest first",
             params=[Param("state", "query", {"type": "string", "enum": list(RUN_STATES)}),
                     Param("target", "query", _S, "FILE.star or FILE.star:FUNCTION"),
                     Param("schedule", "query", _S, "runs started by this schedule"),
                     Param("parent", "query", _S, "child runs of this run id"),
                     Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": service.MAX_PAGE,
                                              "default": 50}),
                     Param("cursor", "query", _S, "the `next` of the previous page"),
                     Param("since", "query", _S, "runs created at this time or later: epoch seconds, ISO 8601 "
                                                 "(UTC unless it has an offset: 2026-12-01T09:30Z) or a duration "
                                                 "before now (24h)"),
                     Param("until", "query", _S, "runs created before this time (as since)")],
             responses={200: ("a page of runs; `next` is null on the last page",
                              {"type": "object", "required": ["runs", "next"],
                               "properties": {"runs": {"type": "array", "items": ref("Run")},
                                              "next": _nullable(_S)}}),
                        400: _400}),
    Endpoint("GET", "/runs/{id}", show, "A run, as `flowmetal show --json`", params=[RUN_ID],
             responses={200: ("the run with its journal and children", ref("RunDocument")), 400: _400,
                        404: _404}),
    Endpoint("GET", "/runs/{id}/journal", journal, "A run's journal entries after a sequence number",
             params=[RUN_ID, Param("after", "query", {"type": "integer", "minimum": 0, "default": 0},
                                   "only entries with seq > after")],
             responses={200: ("journal entries in order",
                              {"type": "object", "required": ["run_id", "journal"],
                               "properties": {"run_id": _S,
                                              "journal": {"type": "array", "items": ref("JournalEntry")}}}),
                        400: _400, 404: _404}),
    Endpoint("GET", "/runs/{id}/logs", logs, "A run's log lines; with Accept: text/event-stream, a live stream",
             params=[RUN_ID, Param("after", "query", {"type": "string", "pattern": "^[0-9]{0,18}$"},
                                   "the `next` (or an SSE event id) already seen"),
                     Param("Last-Event-ID", "header", {"type": "string", "pattern": "^[0-9]{0,18}$"},
                           "as after, sent by an EventSource that reconnects")],
             responses={200: ("log lines (JSON), or Server-Sent Events: `log` events whose id is the cursor and "
                              "data a LogLine, then one `end` event {run_id, state} when the run has ended",
                              Content({"application/json": {
                                  "type": "object", "required": ["run_id", "lines", "next"],
                                  "properties": {"run_id": _S, "lines": {"type": "array", "items": ref("LogLine")},
                                                 "next": _S}},
                                  "text/event-stream": _S})),
                        400: _400, 404: _404}),
    Endpoint("GET", "/runs/{id}/result", result, "Wait for a run to end (following continue_as_new)",
             params=[RUN_ID, Param("wait", "query", {"type": "number", "minimum": 0, "maximum": MAX_WAIT,
                                                     "default": 0}, "seconds to wait for the end, at most 60")],
             responses={200: ("the run has ended: its last incarnation", ref("Run")),
                        202: ("the run has not ended within the wait", ref("Run")), 400: _400, 404: _404}),
    Endpoint("POST", "/runs/{id}/cancel", cancel, "Cancel a run and its children", scope="write", params=[RUN_ID],
             responses={200: ("the run (cancelled, or asked to stop at its next effect when running)", ref("Run")),
                        400: _400, 404: _404, 409: _409}),
    Endpoint("POST", "/runs/{id}/signals/{name}", signal, "Send a signal (the body is its JSON payload)",
             scope="write", body={"description": "any JSON value; an empty body is null"}, body_required=False,
             params=[RUN_ID, Param("name", "path", {"type": "string", "minLength": 1, "maxLength": 200})],
             responses={200: ("the signal is stored; it wakes the run if it waits for it", ref("Run")),
                        400: ("the payload is not JSON", ERROR), 404: _404, 409: _409}),
]


# --- fork and retry (engine/fork.py, as `flowmetal fork` and `flowmetal retry`) ------------------
#
# Both answer 201 with the new run, pending: this server's worker (or any `flowmetal
# worker` on the database) executes it. A prefix that does not replay on the chosen
# code is 409 naming the position, the recorded and the actual call; nothing is created.

RUN["properties"].update({"forked_from": _nullable(_S), "forked_at": _nullable(_I)})


async def fork(request):
    c = ctx(request)
    doc = await json_object(request, ("at", "current"))
    at, current = doc.get("at"), doc.get("current", False)
    if isinstance(at, bool) or not isinstance(at, int) or at < 0:
        raise ApiError(400, "at: expected a journal position, an integer of 0 or more")
    if not isinstance(current, bool):
        raise ApiError(400, "current: expected true (the files on disk) or false (the run's pinned code)")
    run, _ = await run_in_threadpool(service.fork, c.store, c.clock, request.path_params["id"], at, current)
    return respond(service.run_json(run), 201, {"Location": f"/api/v1/runs/{run['id']}"})


async def retry(request):
    c = ctx(request)
    text = await body_text(request)
    if text.strip() not in ("", "{}"):
        raise ApiError(400, "retry takes no request body (or {})")
    run, _, _ = await run_in_threadpool(service.retry, c.store, c.clock, request.path_params["id"])
    return respond(service.run_json(run), 201, {"Location": f"/api/v1/runs/{run['id']}"})


SCHEMAS["Fork"] = {"type": "object", "required": ["at"], "additionalProperties": False,
                   "properties": {"at": {"type": "integer", "minimum": 0,
                                         "description": "copy the first `at` journal entries; the new run "
                                                        "continues live after them"},
                                  "current": {"type": "boolean", "default": False,
                                              "description": "replay on the files on disk, not the run's pinned code"}}}
_409_FORK = ("refused, nothing created: the prefix does not replay on the chosen code (the message names the "
             "position, the recorded and the actual call), an entry of it is still open, a child it spawned "
             "still runs, or the files on disk do not load", ERROR)

ENDPOINTS += [
    Endpoint("POST", "/runs/{id}/fork", fork, "Start a new run from the first `at` journal entries of a run",
             scope="write", params=[RUN_ID], body=ref("Fork"),
             responses={201: ("the new run, pending (forked_from, forked_at say where it came from)", ref("Run")),
                        400: ("malformed JSON, a wrong type, or `at` beyond the journal", ERROR), 404: _404,
                        409: _409_FORK}),
    Endpoint("POST", "/runs/{id}/retry", retry, "Retry a failed run on the files on disk, from just before its "
             "failing entry", scope="write", params=[RUN_ID], body={"type": "object", "additionalProperties": False,
                                                                    "maxProperties": 0},
             body_required=False,
             responses={201: ("the new run, pending", ref("Run")), 400: ("a request body other than {}", ERROR),
                        404: _404, 409: ("the run has not failed, or " + _409_FORK[0].split(": ", 1)[1], ERROR)}),
]
