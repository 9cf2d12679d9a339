"""Errors as JSON `{"error": "..."}` with the right status; never a stack trace.

`ApiError` is raised by routes; `UserError` (a mistake in the request) is 400 and
`NotFound` 404. `CatchAll`, the outermost middleware, turns anything else into a
500 JSON answer and logs the traceback to stderr (the server's log), not to the client.
"""

import logging
import sys
import traceback

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from flowmetal.errors import NotFound, StoreError, UserError

log = logging.getLogger("flowmetal.server")


class ApiError(Exception):
    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def error_response(status, message, headers=None):
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def api_error(request, exc):
    return error_response(exc.status, exc.message, exc.headers)


def user_error_status(exc):
    """404 for NotFound, an error's own `http_status` (409 for a conflict), else 400."""
    return 404 if isinstance(exc, NotFound) else getattr(exc, "http_status", 400)


async def user_error(request, exc):
    message = str(exc)
    diagnostics = getattr(exc, "diagnostics", None)
    if diagnostics:  # a LoadError: file:line:col and the source line of each problem
        message = "\n".join(d.render() for d in diagnostics)
    return error_response(user_error_status(exc), message)


async def store_error(request, exc):
    log.error("store error on %s %s: %s", request.method, request.url.path, exc)
    return error_response(503, f"the database is not available: {exc}")


async def http_error(request, exc):
    message = {404: "no such endpoint", 405: "method not allowed"}.get(exc.status_code, exc.detail)
    return error_response(exc.status_code, message, getattr(exc, "headers", None))


HANDLERS = {ApiError: api_error, UserError: user_error, StoreError: store_error, HTTPException: http_error}


class CatchAll:
    """Outermost ASGI middleware: a bug of ours answers 500 JSON and is logged with its traceback."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            print(f"internal error on {scope.get('method')} {scope.get('path')}:\n{traceback.format_exc()}",
                  file=sys.stderr, flush=True)
            if not started:
                response = error_response(500, "internal error (this is a bug in Flowmetal; the server log "
                                               "has the details)")
                await response(scope, receive, send)
