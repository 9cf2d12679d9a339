"""The http effect against a real local server (127.0.0.1 only)."""

import threading
import time
from email.utils import formatdate

import pytest

from flowmetal.engine.effects import EffectContext
from flowmetal.engine.effects import http
from flowmetal.engine.effects.registry import BuiltinError, lookup
from flowmetal.errors import EffectError

from httpstub import HTTPStub, Reply, http_stub, refused_url, silent_server  # noqa: F401  (http_stub is a fixture)


def ctx(**kw):
    lines = []
    c = EffectContext(run_id=kw.pop("run_id", "run9"), seq=kw.pop("seq", 4), log=lambda s, l: lines.append((s, l)), **kw)
    c.lines = lines
    return c


def test_get(http_stub):
    http_stub.on("/hello", Reply(200, json={"greeting": "hi"}, headers={"X-Thing": "1"}))
    r = http.perform({"url": http_stub.url("/hello?x=1")}, ctx())
    assert r["status"] == 200 and r["ok"] and r["error"] is None
    assert r["json"] == {"greeting": "hi"}
    assert r["body"] == '{"greeting": "hi"}'
    assert r["headers"]["content-type"] == "application/json"
    assert r["headers"]["x-thing"] == "1"
    assert not r["truncated"] and r["retry_after"] is None and not r["timed_out"]
    assert 0 <= r["duration"] < 5
    assert http.outcomes(r) == []
    [req] = http_stub.requests
    assert (req.method, req.path, req.query) == ("GET", "/hello", {"x": ["1"]})
    assert req.body == b""


def test_post_json_with_custom_headers_and_idempotency_key(http_stub):
    http_stub.on("/items", Reply(201, json={"id": 7}), method="POST")
    r = http.perform(
        {"url": http_stub.url("/items"), "method": "post", "json": {"name": "x", "n": [1, 2]},
         "headers": {"X-Api": "v2", "Authorization": "Bearer abc"}},
        ctx(run_id="r1", seq=9),
    )
    assert r["status"] == 201 and r["json"] == {"id": 7}
    [req] = http_stub.requests_to("/items", method="POST")
    assert req.json() == {"name": "x", "n": [1, 2]}
    assert req.headers["content-type"] == "application/json"
    assert req.headers["x-api"] == "v2"
    assert req.headers["authorization"] == "Bearer abc"
    assert req.headers["idempotency-key"] == "r1:9"
    assert req.headers["user-agent"].startswith("flowmetal/")


def test_user_idempotency_key_and_string_body_are_kept(http_stub):
    http_stub.on("/raw", Reply(200, body="plain text"))
    r = http.perform(
        {"url": http_stub.url("/raw"), "method": "PUT", "body": "a=1&b=2",
         "headers": {"idempotency-key": "mine", "Content-Type": "application/x-www-form-urlencoded"}},
        ctx(),
    )
    assert r["body"] == "plain text" and r["json"] is None
    [req] = http_stub.requests
    assert req.method == "PUT" and req.body == b"a=1&b=2"
    assert req.headers["idempotency-key"] == "mine"
    assert req.headers["content-type"] == "application/x-www-form-urlencoded"


def test_json_and_body_together_is_refused_by_the_registry_check(http_stub):
    with pytest.raises(BuiltinError, match="json or body"):
        lookup("http").validate({"url": http_stub.url("/"), "json": {}, "body": "x"})
    for args, message in [({"url": ""}, "url must be"), ({"url": "http://x/", "method": "GE T"}, "method"),
                          ({"url": "http://x/", "headers": {"a": 1}}, "headers"),
                          ({"url": "http://x/", "timeout": "soon"}, "timeout")]:
        with pytest.raises(BuiltinError, match=message):
            lookup("http").validate(args)


@pytest.mark.parametrize("url, message", [
    ("ftp://example.com/file", "unsupported URL scheme 'ftp'"),
    ("example.com/no-scheme", "unsupported URL scheme"),
    ("http://", "no host"),
    ("http://exa mple.com/", "malformed URL"),
    ("http://example.com:99999/", "port 99999 out of range"),
    ("http://example.com:abc/", "malformed URL"),
])
def test_bad_url_is_an_effect_error(url, message):
    with pytest.raises(EffectError, match=message):
        http.perform({"url": url}, ctx())


def test_503_is_a_result(http_stub):
    http_stub.on("/down", Reply(503, body="maintenance"))
    r = http.perform({"url": http_stub.url("/down")}, ctx())
    assert (r["status"], r["ok"], r["error"]) == (503, False, "HTTP 503 Service Unavailable")
    assert r["body"] == "maintenance"
    assert http.outcomes(r) == ["status:503", "5xx"]
    assert http.retry_after(r) is None


def test_404_and_redirects(http_stub):
    http_stub.on("/gone", Reply(404))
    http_stub.on("/moved", Reply(302, headers={"Location": "/gone"}))
    r = http.perform({"url": http_stub.url("/gone")}, ctx())
    assert r["error"] == "HTTP 404 Not Found" and http.outcomes(r) == ["status:404", "4xx"]
    r = http.perform({"url": http_stub.url("/moved")}, ctx())
    assert r["status"] == 302 and r["ok"] and r["headers"]["location"] == "/gone"
    assert http.outcomes(r) == []
    assert [q.path for q in http_stub.requests] == ["/gone", "/moved"]  # not followed


def test_429_retry_after_seconds(http_stub):
    http_stub.on("/limited", Reply(429, headers={"Retry-After": "7"}))
    r = http.perform({"url": http_stub.url("/limited")}, ctx())
    assert r["status"] == 429 and not r["ok"] and r["error"] == "HTTP 429 Too Many Requests"
    assert http.outcomes(r) == ["status:429", "429", "4xx"]
    assert r["retry_after"] == 7.0
    assert http.retry_after(r) == 7.0


def test_503_retry_after_http_date_is_measured_against_the_date_header(http_stub):
    now = time.time()
    headers = {"Retry-After": formatdate(now + 120, usegmt=True), "Date": formatdate(now, usegmt=True)}
    http_stub.on("/busy", Reply(503, headers=headers))
    r = http.perform({"url": http_stub.url("/busy")}, ctx())
    assert 119 <= r["retry_after"] <= 121
    # deterministic from the recorded result, even without the retry_after field
    recorded = dict(r)
    del recorded["retry_after"]
    assert abs(http.retry_after(recorded) - r["retry_after"]) < 1e-6


def test_parse_retry_after():
    ref = 1_700_000_000.0
    assert http.parse_retry_after("0") == 0.0
    assert http.parse_retry_after(" 30 ") == 30.0
    assert http.parse_retry_after(formatdate(ref + 60, usegmt=True), reference=ref) == 60.0
    assert http.parse_retry_after(formatdate(ref - 60, usegmt=True), reference=ref) == 0.0
    assert http.parse_retry_after("soon") is None
    assert http.parse_retry_after("-5") is None
    assert http.parse_retry_after(None) is None
    assert http.retry_after({"status": 200, "headers": {"retry-after": "5"}}) is None
    assert http.retry_after({"status": 429, "headers": {"retry-after": "5"}}) == 5.0


def test_connection_refused_is_a_result():
    url = refused_url("/x")
    t = time.monotonic()
    r = http.perform({"url": url, "timeout": "1s"}, ctx())
    assert time.monotonic() - t < 1.5
    assert (r["status"], r["ok"], r["json"], r["body"], r["headers"]) == (None, False, None, "", {})
    assert r["error"].startswith("connection refused: 127.0.0.1:")
    assert http.outcomes(r) == ["connection"]


def test_server_that_never_answers_times_out():
    with silent_server() as url:
        t = time.monotonic()
        r = http.perform({"url": url, "timeout": "1s"}, ctx())
        elapsed = time.monotonic() - t
    assert 0.9 < elapsed < 2.0
    assert (r["status"], r["ok"], r["timed_out"]) == (None, False, True)
    assert r["error"] == "timed out after 1s"
    assert http.outcomes(r) == ["timeout"]


def test_slow_reply_times_out(http_stub):
    http_stub.on("/slow", Reply(200, body="late", delay=5))
    t = time.monotonic()
    r = http.perform({"url": http_stub.url("/slow"), "timeout": 0.5}, ctx())
    assert time.monotonic() - t < 1.5
    assert r["timed_out"] and r["status"] is None


def test_non_json_body_gives_json_none(http_stub):
    http_stub.on("/html", Reply(200, body="<html>hi</html>", headers={"Content-Type": "text/html"}))
    http_stub.on("/nan", Reply(200, body="NaN"))
    http_stub.on("/empty", Reply(204))
    assert http.perform({"url": http_stub.url("/html")}, ctx())["json"] is None
    assert http.perform({"url": http_stub.url("/nan")}, ctx())["json"] is None
    r = http.perform({"url": http_stub.url("/empty")}, ctx())
    assert r["status"] == 204 and r["body"] == "" and r["json"] is None


def test_charset_is_honoured(http_stub):
    http_stub.on("/latin", Reply(200, body="café".encode("latin-1"), headers={"Content-Type": "text/plain; charset=iso-8859-1"}))
    assert http.perform({"url": http_stub.url("/latin")}, ctx())["body"] == "café"


def test_big_body_is_truncated(http_stub):
    http_stub.on("/big", Reply(200, body=b"z" * (http.BODY_LIMIT + 123456)))
    r = http.perform({"url": http_stub.url("/big")}, ctx())
    assert r["ok"] and r["truncated"] and r["json"] is None
    assert r["body"].endswith("\n[flowmetal: body truncated at 10.0 MiB; the rest was not read]")
    assert len(r["body"].split("\n")[0]) == http.BODY_LIMIT


def test_secrets_are_masked(http_stub):
    http_stub.on("/leak", Reply(200, json={"token": "tok-SECRET-123"}, headers={"X-Echo": "tok-SECRET-123"}))
    c = ctx(secrets=("tok-SECRET-123",))
    r = http.perform({"url": http_stub.url("/leak"), "headers": {"Authorization": "tok-SECRET-123"}}, c)
    # returned as received (the gate masks the recorded result), never in the log
    assert r["json"] == {"token": "tok-SECRET-123"} and r["headers"]["x-echo"] == "tok-SECRET-123"
    assert all("tok-SECRET-123" not in line for _, line in c.lines)
    assert http_stub.requests[0].headers["authorization"] == "tok-SECRET-123"  # sent unmasked


def test_cancelled_before_sending(http_stub):
    c = ctx()
    c.cancelled.set()
    r = http.perform({"url": http_stub.url("/")}, c)
    assert r["error"] == "cancelled" and r["status"] is None
    assert http.outcomes(r) == ["cancelled"]
    assert http_stub.requests == []


def test_retry_after_flaky_script(http_stub):
    """The stub's script: replies in order, the last one repeats."""
    http_stub.on("/flaky", Reply(503), Reply(503), Reply(200, body="ok"))
    statuses = [http.perform({"url": http_stub.url("/flaky")}, ctx())["status"] for _ in range(4)]
    assert statuses == [503, 503, 200, 200]


def test_stub_stops_while_a_reply_is_delayed():
    stub = HTTPStub().start()
    stub.on("/hang", Reply(200, delay=30))
    result = {}
    worker = threading.Thread(target=lambda: result.update(http.perform({"url": stub.url("/hang"), "timeout": 5}, ctx())))
    worker.start()
    time.sleep(0.2)
    t = time.monotonic()
    stub.stop()
    worker.join(timeout=5)
    assert time.monotonic() - t < 2
    assert result["status"] is None and http.outcomes(result) == ["connection"]


def test_retry_on_default():
    assert http.RETRY_ON == ["connection", "timeout", "429", "5xx"]
