"""The Starlette application: `create_app(store, clock, root, ...)`.

Middleware, outermost first: `CatchAll` (a bug answers 500 JSON, logged to
stderr), `BodyLimit` (413 over 1 MiB), then Starlette's exception handling,
which renders `ApiError`, `UserError` and `NotFound` as `{"error": ...}`.
Routes come from the resource modules in `RESOURCES`; each is a list of
`api.Endpoint`s, from which the routing and the OpenAPI document are built.
"""

import contextlib
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.middleware import Middleware

from flowmetal.server import api
from flowmetal.server.errors import HANDLERS, CatchAll
from flowmetal.server.limits import MAX_BODY, BodyLimit
from flowmetal.server.metrics import Metrics
from flowmetal.server.notify import Changes
from flowmetal.server.routes import callbacks, health, runs, schedules, tasks, tokens
from flowmetal.server.web import routes as web_routes

# A new resource (tasks, callbacks, schedule actions) is one more module here.
RESOURCES = [runs, schedules, tokens, health, callbacks, tasks]


@dataclass
class Context:
    """What the routes need: `request.app.state.ctx`."""

    store: object
    clock: object
    root: object  # the workspace root targets are relative to
    changes: Changes
    metrics: Metrics
    options: dict = field(default_factory=dict)
    schedule_specs: object = None  # () -> the ScheduleSpecs the embedded scheduler has loaded
    openapi: dict = field(default_factory=dict)

    wake: object = None  # () -> None: wakes this process's worker (it looks at the database at once)

    def wrote(self):
        """A request changed the database: the worker and the long polls look now, not at their next poll
        (a new run, a completed callback or task, a signal is executed without the poll's delay)."""
        if self.wake is not None:
            self.wake()
        self.changes.notify()

    def declared_schedules(self):
        return list(self.schedule_specs()) if self.schedule_specs else []


def endpoints(resources=RESOURCES):
    return [ep for module in resources for ep in module.ENDPOINTS]


def openapi_document(resources=RESOURCES, public_url=None):
    schemas = {}
    for module in resources:
        schemas.update(getattr(module, "SCHEMAS", {}))
    return api.openapi(endpoints(resources), schemas, public_url)


def create_app(store, clock, root, *, options=None, schedule_specs=None, changes=None, max_body=MAX_BODY, wake=None):
    options = dict(options or {})
    changes = changes or Changes(store)
    metrics = Metrics(store)
    metrics.registry.register(health.TaskQueues(store, clock))
    ctx = Context(store, clock, root, changes, metrics, options, schedule_specs,
                  openapi_document(public_url=options.get("public_url")), wake)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        changes.start()
        try:
            yield
        finally:
            changes.stop()

    app = Starlette(routes=[*api.build_routes(endpoints(), api.Auth(store), metrics), *web_routes()],
                    middleware=[Middleware(BodyLimit, limit=max_body)], exception_handlers=HANDLERS,
                    lifespan=lifespan)
    app.state.ctx = ctx
    return CatchAll(app), ctx
