"""/healthz, /metrics and the OpenAPI document.

`TaskQueues` adds the outside workers' queues to /metrics (app.py registers it
with the other collectors of server/metrics.py): per queue, the waiting tasks of
live runs, how many of them are under a live lease, and the age of the oldest.
A queue with no waiting task has no series.
"""

from prometheus_client.core import GaugeMetricFamily
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from flowmetal.server.api import Endpoint
from flowmetal.server.metrics import CONTENT_TYPE
from flowmetal.server.routes.common import ctx, respond


class TaskQueues:
    """Prometheus collector: one `store.task_queues(now)` query per scrape."""

    def __init__(self, store, clock):
        self.store, self.clock = store, clock

    def collect(self):
        now = self.clock.now()
        depth = GaugeMetricFamily("flowmetal_task_queue_depth", "Waiting tasks of live runs, by queue",
                                  labels=["queue"])
        leased = GaugeMetricFamily("flowmetal_task_queue_leased", "Of those, the tasks under a live lease",
                                   labels=["queue"])
        age = GaugeMetricFamily("flowmetal_task_queue_oldest_age_seconds",
                                "Seconds since the oldest waiting task of the queue was created", labels=["queue"])
        for q in self.store.task_queues(now):
            depth.add_metric([q["queue"]], q["depth"])
            leased.add_metric([q["queue"]], q["leased"] or 0)
            age.add_metric([q["queue"]], max(0.0, now - q["oldest"]))
        yield depth
        yield leased
        yield age


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
