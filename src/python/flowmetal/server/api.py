"""A small declarative route table: each `Endpoint` carries its method, path,
scope, parameters, request body and responses. The Starlette routes and the
OpenAPI 3 document are both built from it, so the document cannot drift from
what is served.

A resource is one module under `flowmetal.server.routes` exposing `ENDPOINTS`
(and `SCHEMAS`, its reusable component schemas); `app.py` lists the modules.
"""

import time
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from flowmetal import __version__
from flowmetal.server import tokens
from flowmetal.server.errors import ApiError

PREFIX = "/api/v1"
ERROR = {"$ref": "#/components/schemas/Error"}


def ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


@dataclass
class Param:
    name: str
    where: str  # "path", "query" or "header"
    schema: dict
    description: str = ""
    required: bool = False


@dataclass
class Endpoint:
    method: str
    path: str  # under PREFIX unless `root` is set
    handler: object  # async (request) -> Response
    summary: str
    scope: str | None = "read"  # None: no token needed
    params: list = field(default_factory=list)
    body: dict | None = None  # the JSON request body's schema
    body_required: bool = True
    responses: dict = field(default_factory=dict)  # status -> (description, schema or None[, media type])
    root: bool = False  # served at `path` itself, not under /api/v1
    tag: str = "runs"

    @property
    def full_path(self):
        return self.path if self.root else PREFIX + self.path


class Content(dict):
    """A response with several media types: {media type: schema}."""


class Auth:
    """Checks the bearer token of a request against the store (in the threadpool)."""

    def __init__(self, store):
        self.store = store

    async def check(self, request, needed):
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="flowmetal"'}
        if scheme.lower() != "bearer" or not presented.strip():
            raise ApiError(401, "authentication required: send Authorization: Bearer TOKEN "
                                "(make one with: flowmetal token create NAME)", challenge)
        row = await run_in_threadpool(tokens.verify, self.store, presented.strip())
        if row is None:
            raise ApiError(401, "invalid or revoked token", {**challenge, "WWW-Authenticate":
                           'Bearer realm="flowmetal", error="invalid_token"'})
        if not tokens.allows(row["scope"], needed):
            raise ApiError(403, f"token {row['name']!r} has scope {row['scope']}; this needs {needed}")
        request.state.token = row


def build_routes(endpoints, auth, metrics):
    """Starlette routes: one per path, dispatching on the method, each call checked and counted."""
    by_path = {}
    for ep in endpoints:
        by_path.setdefault(ep.full_path, []).append(ep)
    routes = []
    for path, eps in by_path.items():
        routes.append(Route(path, _dispatch(path, {ep.method: ep for ep in eps}, auth, metrics),
                            methods=sorted({ep.method for ep in eps})))
    return routes


def _dispatch(path, by_method, auth, metrics):
    async def endpoint(request):
        ep = by_method.get(request.method) or by_method.get("GET")  # HEAD is answered as GET
        started = time.monotonic()
        status = 500
        try:
            if ep.scope is not None:
                await auth.check(request, ep.scope)
            response = await ep.handler(request)
            status = response.status_code
            if request.method not in ("GET", "HEAD") and status < 400:
                request.app.state.ctx.wrote()
            return response
        except ApiError as e:
            status = e.status
            raise
        except Exception as e:
            from flowmetal.errors import StoreError, UserError
            from flowmetal.server.errors import user_error_status

            status = user_error_status(e) if isinstance(e, UserError) else 503 if isinstance(e, StoreError) else 500
            raise
        finally:
            metrics.request(request.method, path, status, time.monotonic() - started)

    return endpoint


# --- the OpenAPI document -----------------------------------------------------------


def openapi(endpoints, schemas, public_url=None):
    paths = {}
    for ep in endpoints:
        op = {"summary": ep.summary, "operationId": _operation_id(ep), "tags": [ep.tag], "responses": {}}
        if ep.scope is not None:
            op["security"] = [{"bearer": []}]
            op["description"] = f"Needs a token with scope `{ep.scope}` or higher."
        if ep.params:
            op["parameters"] = [_param(p) for p in ep.params]
        if ep.body is not None:
            op["requestBody"] = {"required": ep.body_required,
                                 "content": {"application/json": {"schema": ep.body}}}
        responses = dict(ep.responses)
        if ep.scope is not None:
            responses.setdefault(401, ("no token, or a wrong or revoked one", ERROR))
            responses.setdefault(403, (f"the token's scope is below {ep.scope}", ERROR))
        if ep.body is not None:
            responses.setdefault(413, ("the request body is larger than 1 MiB", ERROR))
        for status, spec in sorted(responses.items()):
            description, schema = spec[0], spec[1]
            media = spec[2] if len(spec) > 2 else "application/json"
            answer = {"description": description}
            if isinstance(schema, Content):
                answer["content"] = {m: {"schema": s} for m, s in schema.items()}
            elif schema is not None:
                answer["content"] = {media: {"schema": schema}}
            op["responses"][str(status)] = answer
        paths.setdefault(ep.full_path, {})[ep.method.lower()] = op
    doc = {
        "openapi": "3.0.3",
        "info": {"title": "Flowmetal", "version": __version__,
                 "description": "The JSON API of `flowmetal serve`. Errors are `{\"error\": \"...\"}`."},
        "paths": paths,
        "components": {
            "schemas": {"Error": {"type": "object", "required": ["error"], "additionalProperties": False,
                                  "properties": {"error": {"type": "string"}}}, **schemas},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "a token from `flowmetal token create NAME`"}},
        },
    }
    if public_url:
        doc["servers"] = [{"url": public_url.rstrip("/")}]
    return doc


def _param(p):
    out = {"name": p.name, "in": p.where, "required": p.required or p.where == "path", "schema": p.schema}
    if p.description:
        out["description"] = p.description
    return out


def _operation_id(ep):
    words = [w.strip("{}") for w in ep.path.strip("/").replace("-", "_").split("/") if w]
    return ep.method.lower() + "_" + "_".join(words or ["root"])
