"""/api/v1/tokens (scope admin): the bearer tokens, as `flowmetal token list|create|revoke`.

The list shows names, scopes and when each was created and last used, never a
token or its hash. POST {"name", "scope"} answers 201 with the new token in
`token`, the only time it is shown (the database keeps its SHA-256:
server/tokens.py); a name in use is 409. DELETE revokes: the token's next request
gets 401; an unknown name is 404. An admin may revoke the token it is using.
"""

from starlette.concurrency import run_in_threadpool

from flowmetal.server import service
from flowmetal.server.api import ERROR, Endpoint, Param, ref
from flowmetal.server.errors import ApiError
from flowmetal.server.routes.common import ctx, json_object, respond
from flowmetal.server.tokens import SCOPES

_S = {"type": "string"}
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"


async def list_(request):
    c = ctx(request)
    return respond(await run_in_threadpool(service.list_tokens, c.store))


async def create(request):
    c = ctx(request)
    doc = await json_object(request, ("name", "scope"))
    name, scope = doc.get("name"), doc.get("scope", "read")
    if not isinstance(name, str):
        raise ApiError(400, "name: expected a string")
    if not isinstance(scope, str):
        raise ApiError(400, f"scope: expected one of {', '.join(SCOPES)}")
    made = await run_in_threadpool(service.create_token, c.store, name, scope, c.clock.now())
    return respond(made, 201, {"Cache-Control": "no-store"})


async def revoke(request):
    c = ctx(request)
    name = request.path_params["name"]
    await run_in_threadpool(service.revoke_token, c.store, name)
    return respond({"name": name, "revoked": True})


TOKEN = {"type": "object", "required": ["name", "scope", "created_at"], "additionalProperties": False,
         "properties": {"name": _S, "scope": {"type": "string", "enum": list(SCOPES)},
                        "created_at": {"type": "number"}, "last_used_at": {"type": "number", "nullable": True}}}
SCHEMAS = {
    "Token": TOKEN,
    "NewToken": {"type": "object", "required": ["name"], "additionalProperties": False,
                 "properties": {"name": {"type": "string", "pattern": NAME_PATTERN, "example": "ci"},
                                "scope": {"type": "string", "enum": list(SCOPES), "default": "read"}}},
    "CreatedToken": {"type": "object", "required": ["name", "scope", "created_at", "token"],
                     "additionalProperties": False,
                     "properties": {**TOKEN["properties"],
                                    "token": {"type": "string", "description": "the bearer token, shown only here"}}},
}

NAME = Param("name", "path", {"type": "string", "minLength": 1}, "the token's name", required=True)

ENDPOINTS = [
    Endpoint("GET", "/tokens", list_, "The API tokens: names, scopes, created and last used (never a token)",
             scope="admin", tag="tokens",
             responses={200: ("every token, by name",
                              {"type": "object", "required": ["tokens"],
                               "properties": {"tokens": {"type": "array", "items": ref("Token")}}})}),
    Endpoint("POST", "/tokens", create, "Make a token; the answer shows it, once", scope="admin", tag="tokens",
             body=ref("NewToken"),
             responses={201: ("the new token (only its hash is stored)", ref("CreatedToken")),
                        400: ("malformed JSON, a bad name or an unknown scope", ERROR),
                        409: ("a token of that name exists", ERROR)}),
    Endpoint("DELETE", "/tokens/{name}", revoke, "Revoke a token: its next request gets 401", scope="admin",
             tag="tokens", params=[NAME],
             responses={200: ("revoked", {"type": "object", "required": ["name", "revoked"],
                                          "properties": {"name": _S, "revoked": {"type": "boolean"}}}),
                        404: ("no token of that name", ERROR)}),
]
