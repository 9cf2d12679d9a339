"""Parsing helpers shared by the route modules: JSON bodies and query parameters,
each failure a 400 with a one-line message."""

import json
import math

from starlette.responses import JSONResponse

from flowmetal.server.errors import ApiError


def ctx(request):
    return request.app.state.ctx


def respond(doc, status=200, headers=None):
    return JSONResponse(doc, status_code=status, headers=headers)


async def body_text(request):
    raw = await request.body()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 text") from None


def parse_json(text, what="the request body"):
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as e:
        raise ApiError(400, f"{what} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise ApiError(400, f"{what} is nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise ApiError(400, f"{what} is not JSON Flowmetal can keep: {e}") from None


def _finite(text):
    value = float(text)
    if not math.isfinite(value):
        raise ApiError(400, f"the number {text[:40]} is too large for a JSON value Flowmetal keeps")
    return value


def _no_constant(name):
    raise ApiError(400, f"the request body contains {name}, which is not JSON")


async def json_object(request, fields):
    """The body as a JSON object whose keys are among `fields`."""
    text = await body_text(request)
    if not text.strip():
        raise ApiError(400, "the request body is empty; expected a JSON object")
    doc = parse_json(text)
    if not isinstance(doc, dict):
        raise ApiError(400, "the request body must be a JSON object")
    unknown = sorted(set(doc) - set(fields))
    if unknown:
        raise ApiError(400, f"unknown field(s) {', '.join(map(repr, unknown))}; expected {', '.join(fields)}")
    return doc


def query_int(request, name, default, low, high):
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{name}={text!r}: expected an integer") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name}={value}: expected {low} to {high}")
    return value


def query_number(request, name, default, low, high):
    text = request.query_params.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        raise ApiError(400, f"{name}={text!r}: expected a number of seconds") from None
    if math.isnan(value) or not low <= value <= high:
        raise ApiError(400, f"{name}={text}: expected {low:g} to {high:g} seconds")
    return value


def query_text(request, name):
    text = request.query_params.get(name)
    return None if text is None or text == "" else text
