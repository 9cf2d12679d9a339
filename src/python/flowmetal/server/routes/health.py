"""/healthz, /metrics and the OpenAPI document."""

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from flowmetal.server.api import Endpoint
from flowmetal.server.metrics import CONTENT_TYPE
from flowmetal.server.routes.common import ctx, respond


def _check(store):
    store.schema_version()  # one read: the database answers


async def healthz(request):
    c = ctx(request)
    try:
        await run_in_threadpool(_check, c.store)
    except Exception as e:  # the answer is the health, never a 500
        return respond({"status": "error", "error": f"the database does not answer: {e}"}, 503)
    return respond({"status": "stopping" if c.changes.stopping.is_set() else "ok",
                    "worker": c.options.get("worker", False), "scheduler": c.options.get("scheduler", False)})


async def metrics(request):
    c = ctx(request)
    return Response(await run_in_threadpool(c.metrics.render), media_type=CONTENT_TYPE)


async def openapi_json(request):
    return respond(ctx(request).openapi)


HEALTH = {"type": "object", "required": ["status"],
          "properties": {"status": {"type": "string", "enum": ["ok", "stopping"]}, "worker": {"type": "boolean"},
                         "scheduler": {"type": "boolean"}}}

ENDPOINTS = [
    Endpoint("GET", "/healthz", healthz, "Liveness: the server and its database answer", scope=None, root=True,
             tag="operations",
             responses={200: ("healthy (status ok, or stopping during a drain)", HEALTH),
                        503: ("the database does not answer",
                              {"type": "object", "properties": {"status": {"type": "string"},
                                                                "error": {"type": "string"}}})}),
    Endpoint("GET", "/metrics", metrics, "Prometheus metrics", root=True, tag="operations",
             responses={200: ("the Prometheus text format", {"type": "string"}, "text/plain")}),
    Endpoint("GET", "/openapi.json", openapi_json, "This document", scope=None, tag="operations",
             responses={200: ("the OpenAPI 3 document", {"type": "object"})}),
]
