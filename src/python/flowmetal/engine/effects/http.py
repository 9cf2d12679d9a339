"""The `http` effect: one HTTP request with httpx.

Documented limits and behaviour:

- Only http and https URLs; a malformed URL or another scheme is an
  EffectError (the call can never succeed as written).
- Body: at most `BODY_LIMIT` (10 MiB) of the (decompressed) response body is
  read; a longer body is cut there, the rest is not read, `truncated` is true
  and a note is appended: "\\n[flowmetal: body truncated at 10.0 MiB; the rest
  was not read]". The body is decoded with the charset of its Content-Type,
  else UTF-8, invalid bytes replaced.
- `json` is the body parsed as JSON when it is valid JSON (whatever the
  Content-Type says) and not truncated, else None.
- Request body: `json` (sent as compact UTF-8 JSON with
  `Content-Type: application/json` unless set) or `body` (a string, UTF-8);
  both at once is refused by `validate` (a BuiltinError, nothing recorded).
- Headers: `Idempotency-Key: <run id>:<sequence>` is always sent unless the
  caller sets one; `User-Agent: flowmetal/<version>` unless set. Response
  header names are lower-cased; a repeated header is joined with ", ".
- Redirects are not followed: a 3xx is a result (ok, as curl without -L).
- Timeout (default 30s) bounds connecting, each read and write, and the
  whole body download. Proxy settings (HTTP_PROXY, NO_PROXY...) and
  SSL_CERT_FILE of the worker's environment are honoured.
- Cancellation (`ctx.cancelled`) is checked before the request and between
  body chunks; a request still waiting for the server ends at the latest
  when its timeout elapses.
- Connection failures and timeouts are results (`status` None, `ok` false),
  never exceptions.
- Secrets (`ctx.secrets`) are replaced by "***" in logged lines and error
  text. Body, headers and `json` are returned as received: the gate masks
  them when it records the result (doc/effects.md, "Secrets"); truncation
  never cuts inside a secret.
- `retry_after`: on 429 and 503, the delay a `Retry-After` header asks for,
  in seconds (delta-seconds, or an HTTP-date measured against the response's
  `Date` header, else the time it arrived); else None.

Result fields: status, headers, body, json, ok (status < 400), error (None
when ok; "HTTP 503 Service Unavailable", "connection refused: host:port",
"timed out after 1s", "cancelled"), duration, timed_out, truncated,
retry_after.

Outcomes (for `retry_on`): "connection", "timeout", "status:N" plus one of
"5xx", "4xx" ("429" and "4xx" for 429), "cancelled" (never retried); none
when ok.
"""

import email.utils
import json as jsonlib
import os
import threading
import time
from datetime import timezone
from http import HTTPStatus

import httpx

from flowmetal import __version__
from flowmetal.durations import format_duration, parse_duration
from flowmetal.engine.effects.registry import OUTSIDE, check, duration, effect, is_str_dict
from flowmetal.engine.effects.sh import bounded_text, format_size
from flowmetal.errors import EffectError

BODY_LIMIT = 10 * 1024 * 1024
DEFAULT_TIMEOUT = "30s"
RETRY_ON = ["connection", "timeout", "429", "5xx"]

_ssl_contexts = {}
_ssl_lock = threading.Lock()


def validate(args):
    """The argument check, run once by the gate before anything is recorded."""
    check(isinstance(args["url"], str) and args["url"], "http", "argument url must be a non-empty string")
    method = args.get("method", "GET")
    check(isinstance(method, str) and method.isalpha(), "http", f"argument method must be a word like \"GET\", got {method!r}")
    check(is_str_dict(args.get("headers") or {}), "http", "argument headers must be a dict of strings to strings")
    check(args.get("body") is None or isinstance(args["body"], str), "http", "argument body must be a string or None")
    check(args.get("json") is None or args.get("body") is None, "http", "give json or body, not both")
    check(isinstance(args.get("check", True), bool), "http", "argument check must be True or False")
    duration("http", "timeout", args.get("timeout"))


@effect("http", OUTSIDE, validate=validate, retry=True,
        params={"method": "GET", "headers": {}, "json": None, "body": None, "timeout": DEFAULT_TIMEOUT,
                "check": True, "retry": None},
        v1=("url", "method", "headers", "json", "body", "timeout", "check"),
        outcomes=lambda result: outcomes(result), retry_after=lambda result: retry_after(result),
        retry_on=tuple(RETRY_ON))
def perform(args, ctx):
    """Send the request described by `args` (validated by `validate`); return the result dict
    (see the module docstring)."""
    url = _check_url(args["url"], ctx)
    method = args.get("method") or "GET"
    headers, content = _request_parts(args, ctx)
    timeout = parse_duration(DEFAULT_TIMEOUT if args.get("timeout") is None else args["timeout"])

    started = time.monotonic()
    if ctx.cancelled.is_set():
        return _failure(started, "cancelled")
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False, verify=_ssl_context()) as client:
            try:
                request = client.build_request(method.upper(), url, headers=headers, content=content)
            except UnicodeEncodeError as exc:
                raise EffectError(f"http: header names and values must be ASCII: {ctx.mask(str(exc))}") from None
            response = client.send(request, stream=True)
            try:
                received = time.time()
                kept, truncated = _read_body(response, started + timeout, ctx)
            finally:
                response.close()
            if kept is None:
                return _failure(started, "cancelled")
    except httpx.TimeoutException:
        return _failure(started, f"timed out after {format_duration(timeout)}", timed_out=True)
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise EffectError(f"http: cannot request {ctx.mask(str(url))}: {ctx.mask(str(exc))}") from None
    except httpx.ConnectError as exc:
        text = str(exc) or type(exc).__name__
        if "refused" in text.lower():
            return _failure(started, ctx.mask(f"connection refused: {url.host}:{url.port or _default_port(url)}"))
        return _failure(started, ctx.mask(f"connection failed: {text}"))
    except httpx.TransportError as exc:
        return _failure(started, ctx.mask(f"connection error: {str(exc) or type(exc).__name__}"))
    except httpx.DecodingError as exc:
        return _failure(started, ctx.mask(f"connection error: undecodable response body: {exc}"))

    result = _response_result(response, kept, truncated, received, ctx)
    result["duration"] = round(time.monotonic() - started, 3)
    ctx.log("log", ctx.mask(f"http {method.upper()} {url} -> {result['status']} ({format_duration(result['duration'])})"))
    return result


def outcomes(result):
    """Names of what happened, for `retry_on`: [] when ok."""
    status = result.get("status")
    if status is None:
        if result.get("error") == "cancelled":
            return ["cancelled"]
        return ["timeout"] if result.get("timed_out") else ["connection"]
    if status >= 500:
        return [f"status:{status}", "5xx"]
    if status == 429:
        return ["status:429", "429", "4xx"]
    if status >= 400:
        return [f"status:{status}", "4xx"]
    return []


def retry_after(result):
    """Seconds a 429 or 503 response asked to wait (its Retry-After), else None."""
    if result.get("status") not in (429, 503):
        return None
    if "retry_after" in result:
        return result["retry_after"]
    headers = result.get("headers") or {}
    return parse_retry_after(headers.get("retry-after"), reference=_http_date(headers.get("date")))


def parse_retry_after(value, reference=None):
    """Seconds from a Retry-After value: delta-seconds, or an HTTP-date minus `reference`.

    `reference` is a POSIX time (default: now). A date in the past gives 0.0;
    an unreadable value gives None.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(int(value))
    when = _http_date(value)
    if when is None:
        return None
    return max(0.0, when - (time.time() if reference is None else reference))


def _ssl_context():
    """The TLS context, made once per CA setting: loading the CA bundle costs tens of ms,
    more than a whole local request. SSL_CERT_FILE / SSL_CERT_DIR are honoured as httpx does."""
    key = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    with _ssl_lock:
        context = _ssl_contexts.get(key)
        if context is None:
            context = _ssl_contexts[key] = httpx.create_ssl_context()
    return context


def _check_url(url, ctx):
    """The parsed URL; an EffectError (recorded: the call can never succeed) when it is unusable."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise EffectError(f"http: malformed URL {ctx.mask(url)!r}: {ctx.mask(str(exc))}") from None
    if parsed.scheme not in ("http", "https"):
        scheme = parsed.scheme or "(none)"
        raise EffectError(f"http: unsupported URL scheme {scheme!r} in {ctx.mask(url)!r}; use http or https")
    if not parsed.host:
        raise EffectError(f"http: malformed URL {ctx.mask(url)!r}: no host")
    if any(c.isspace() or ord(c) < 32 for c in url) or "%" in parsed.host:
        raise EffectError(f"http: malformed URL {ctx.mask(url)!r}: spaces or control characters (percent-encode them)")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise EffectError(f"http: malformed URL {ctx.mask(url)!r}: port {parsed.port} out of range")
    return parsed


def _request_parts(args, ctx):
    headers = dict(args.get("headers") or {})
    names = {name.lower() for name in headers}
    if "idempotency-key" not in names:
        headers["Idempotency-Key"] = ctx.idempotency_key
    if "user-agent" not in names:
        headers["User-Agent"] = f"flowmetal/{__version__}"
    json_value, body = args.get("json"), args.get("body")
    if json_value is not None:
        try:
            content = jsonlib.dumps(json_value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise EffectError(f"http: json is not a JSON value: {exc}") from None
        if "content-type" not in names:
            headers["Content-Type"] = "application/json"
        return headers, content.encode("utf-8")
    if body is not None:
        return headers, body.encode("utf-8")
    return headers, None


def _read_body(response, deadline, ctx):
    """Read at most BODY_LIMIT (plus a masking margin); None when cancelled."""
    keep = BODY_LIMIT + max((len(s.encode("utf-8")) for s in ctx.secrets if s), default=0) + 4
    kept = bytearray()
    for chunk in response.iter_bytes():
        if ctx.cancelled.is_set():
            return None, False
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("body download exceeded the timeout")
        kept += chunk
        if len(kept) > keep:
            del kept[keep:]
            return kept, True
    return kept, len(kept) > BODY_LIMIT


def _response_result(response, kept, truncated, received, ctx):
    status = response.status_code
    try:
        text = bytes(kept).decode(response.charset_encoding or "utf-8", "replace")
        kept = text.encode("utf-8")
    except LookupError:
        pass  # unknown charset: read it as UTF-8
    note = f"[flowmetal: body truncated at {format_size(BODY_LIMIT)}; the rest was not read]" if truncated else None
    body = bounded_text(kept, BODY_LIMIT, ctx.secrets, note)
    headers = {}
    for name, value in response.headers.multi_items():
        name = name.lower()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    ok = status < 400
    after = None
    if status in (429, 503):
        reference = _http_date(headers.get("date"))
        after = parse_retry_after(headers.get("retry-after"), received if reference is None else reference)
    return {
        "status": status,
        "headers": headers,
        "body": body,
        "json": None if truncated else _parse_json(body),
        "ok": ok,
        "error": None if ok else f"HTTP {status} {_reason(response)}".rstrip(),
        "timed_out": False,
        "truncated": truncated,
        "retry_after": after,
    }


def _failure(started, error, timed_out=False):
    return {
        "status": None,
        "headers": {},
        "body": "",
        "json": None,
        "ok": False,
        "error": error,
        "duration": round(time.monotonic() - started, 3),
        "timed_out": timed_out,
        "truncated": False,
        "retry_after": None,
    }


def _parse_json(text):
    if not text.strip():
        return None
    try:
        return jsonlib.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return None


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _reason(response):
    if response.reason_phrase:
        return response.reason_phrase
    try:
        return HTTPStatus(response.status_code).phrase
    except ValueError:
        return ""


def _http_date(value):
    """POSIX time of an HTTP-date, or None."""
    if not isinstance(value, str):
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _default_port(url):
    return 443 if url.scheme == "https" else 80
