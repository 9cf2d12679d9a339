"""/callbacks/{token}: the single-use URLs of `callback()` (engine/deferred.py).

No bearer token: the URL's 256-bit token is the capability. POST completes the
callback with the JSON body (200; the same body again 200; a different one 409;
expired, or its run ended, 410; unknown 404; over 1 MiB 413 by the body limit).
GET shows its state; for `callback(approval = True)` a browser gets a page with
Approve and Reject buttons, which post {"approved": true} or {"approved": false}.
"""

import html

from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse

from flowmetal.engine import deferred
from flowmetal.server.api import Endpoint, Param
from flowmetal.server.errors import ApiError
from flowmetal.server.routes.common import body_text, ctx, parse_json, respond

_S = {"type": "string"}
TOKEN = Param("token", "path", _S, "the token of the callback URL", required=True)
STATUS = {deferred.COMPLETED: 200, deferred.DUPLICATE: 200,
                                                 deferred.CONFLICT: 409, deferred.EXPIRED: 410,
                                                 deferred.VOID: 410, deferred.UNKNOWN: 404}


def _row(store, token):
    row = store.deferred_by_token(deferred.token_hash(token))
    if row is None:
        return None, None
    return row, store.get_run(row["run_id"])


def _state(row, run, now):
    if row["state"] == "waiting":
        if run is None or run["state"] in ("completed", "failed", "cancelled", "timed_out"):
            return "void"
        if row["deadline"] is not None and now >= row["deadline"]:
            return "expired"
    return row["state"]


def _document(row, run, now):
    detail = deferred.loads(row["detail"])
    return {"state": _state(row, run, now), "name": detail.get("callback"), "approval": detail.get("approval", False),
            "run_id": row["run_id"], "created_at": row["created_at"], "deadline": row["deadline"]}


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Approval: {name}</title></head>
<body><h1>Approval requested: {name}</h1><p>Run <code>{run}</code> waits for a decision. State: <b>{state}</b>.</p>
{form}</body></html>"""
FORM = """<form method="post"><button name="decision" value="approve">Approve</button>
<button name="decision" value="reject">Reject</button></form>"""


async def show(request):
    c = ctx(request)
    token = request.path_params["token"]
    row, run = await run_in_threadpool(_row, c.store, token)
    if row is None:
        raise ApiError(404, "no such callback")
    doc = _document(row, run, c.clock.now())
    if doc["approval"] and "text/html" in request.headers.get("accept", ""):
        form = FORM if doc["state"] == "waiting" else ""
        return HTMLResponse(PAGE.format(name=html.escape(doc["name"] or "callback"), run=html.escape(doc["run_id"]),
                                        state=doc["state"], form=form))
    return respond(doc)


async def call(request):
    c = ctx(request)
    token = request.path_params["token"]
    row, _ = await run_in_threadpool(_row, c.store, token)
    if row is None:
        raise ApiError(404, "no such callback")
    approval = deferred.loads(row["detail"]).get("approval", False)
    if approval and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form = await request.form()
        decision = form.get("decision")
        if decision not in ("approve", "reject"):
            raise ApiError(400, "the form must say decision=approve or decision=reject")
        payload = {"approved": decision == "approve"}
    else:
        text = await body_text(request)
        payload = parse_json(text) if text.strip() else None
    done = await run_in_threadpool(deferred.complete_callback, c.store, token, payload, c.clock)
    status = STATUS[done.outcome]
    if status >= 400:
        raise ApiError(status, done.message)
    return respond({"state": "completed", "outcome": done.outcome, "message": done.message}, status)


CALLBACK = {"type": "object", "properties": {
    "state": {**_S, "enum": ["waiting", "completed", "expired", "void"]}, "name": {**_S, "nullable": True},
    "approval": {"type": "boolean"}, "run_id": _S, "created_at": {"type": "number"},
    "deadline": {"type": "number", "nullable": True}}}
RESULT = {"type": "object", "properties": {"state": _S, "outcome": _S, "message": _S}}
ERROR = {"$ref": "#/components/schemas/Error"}

SCHEMAS = {"Callback": CALLBACK}

ENDPOINTS = [
    Endpoint("GET", "/callbacks/{token}", show, "A callback's state (an approval page for a browser)", scope=None,
             root=True, tag="callbacks", params=[TOKEN],
             responses={200: ("its state", {"$ref": "#/components/schemas/Callback"}), 404: ("unknown", ERROR)}),
    Endpoint("POST", "/callbacks/{token}", call, "Call a callback: its JSON body is what wait_callback() returns",
             scope=None, root=True, tag="callbacks", params=[TOKEN], body={}, body_required=False,
             responses={200: ("completed (or completed before with this same body)", RESULT),
                        404: ("unknown", ERROR), 409: ("completed before with a different body", ERROR),
                        410: ("expired, or its run has ended", ERROR), 413: ("the body is over 1 MiB", ERROR)}),
]
