"""A scriptable local HTTP server for tests (127.0.0.1 only, a free port).

    from httpstub import HTTPStub, Reply, http_stub, silent_server, refused_url

    with HTTPStub() as stub:                       # or the `http_stub` fixture
        stub.on("/flaky", Reply(503), Reply(503, headers={"Retry-After": "2"}), Reply(200, json={"ok": True}))
        stub.on("/slow", Reply(200, body="late", delay=5.0))
        stub.on("/echo", lambda req: Reply(200, json={"got": req.json()}), method="POST")
        url = stub.url("/flaky")                   # "http://127.0.0.1:PORT/flaky"
        ...
        stub.requests                              # every request received, in order
        stub.requests_to("/flaky")                 # only those for one path

Replies for a path are served in order; the last one repeats for every later
request. A reply can be a `Reply` or a function `f(request) -> Reply`.
A request to a path with no script gets 404 with a body naming the path.
`Reply.delay` sleeps before answering (cut short when the server stops).

`silent_server()` yields a URL whose server accepts TCP connections and never
answers (for timeouts); `refused_url()` is a URL on a closed port (for
"connection refused").

Used by the effect tests and by end-to-end tests of workflows calling `http`.
"""

import json as jsonlib
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass
class Reply:
    """One scripted response. `json` (any JSON value) overrides `body` and sets Content-Type."""

    status: int = 200
    body: str | bytes = b""
    headers: dict = field(default_factory=dict)
    json: object = None
    delay: float = 0.0

    def payload(self):
        if self.json is not None:
            return jsonlib.dumps(self.json).encode("utf-8"), {"Content-Type": "application/json"}
        body = self.body.encode("utf-8") if isinstance(self.body, str) else self.body
        return body, {"Content-Type": "text/plain; charset=utf-8"}


@dataclass
class Request:
    """A request the stub received. `headers` has lower-cased names."""

    method: str
    path: str
    query: dict
    headers: dict
    body: bytes
    time: float

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return jsonlib.loads(self.body) if self.body else None


class HTTPStub:
    """A threaded HTTP/1.1 server on 127.0.0.1 answering from a per-path script."""

    def __init__(self):
        self.requests = []
        self._scripts = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = None
        self._thread = None

    # -- scripting -------------------------------------------------------
    def on(self, path, *replies, method=None):
        """Script the replies for `path` (and `method`, any if None), replacing earlier ones."""
        if not replies:
            raise ValueError("give at least one Reply")
        with self._lock:
            self._scripts[(method.upper() if method else None, path)] = list(replies)
        return self

    def url(self, path="/"):
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{path}"

    @property
    def port(self):
        return self._server.server_address[1]

    def requests_to(self, path, method=None):
        with self._lock:
            return [r for r in self.requests if r.path == path and (method is None or r.method == method.upper())]

    # -- lifecycle -------------------------------------------------------
    def start(self):
        stub = self

        class Handler(_Handler):
            pass

        Handler.stub = stub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- used by the handler ----------------------------------------------
    def _record_and_choose(self, request):
        with self._lock:
            self.requests.append(request)
            script = self._scripts.get((request.method, request.path)) or self._scripts.get((None, request.path))
            if not script:
                return Reply(404, body=f"httpstub: no reply scripted for {request.method} {request.path}")
            reply = script.pop(0) if len(script) > 1 else script[0]
        return reply(request) if callable(reply) else reply


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stub = None  # set per server

    def _handle(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            time=time.time(),
        )
        reply = self.stub._record_and_choose(request)
        if reply.delay and self.stub._stopping.wait(reply.delay):
            self.close_connection = True  # stopping: drop the connection unanswered
            return
        payload, defaults = reply.payload()
        self.send_response(reply.status)
        headers = {**defaults, **reply.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def log_message(self, format, *args):  # quiet
        pass


@pytest.fixture
def http_stub():
    """A started HTTPStub, stopped after the test."""
    with HTTPStub() as stub:
        yield stub


@contextmanager
def silent_server():
    """Yield the URL of a server that accepts TCP connections and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # the kernel completes handshakes; nobody ever reads or writes
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        sock.close()


def free_port():
    """A port on 127.0.0.1 with nothing listening (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def refused_url(path="/"):
    """A URL on a closed local port: connecting is refused."""
    return f"http://127.0.0.1:{free_port()}{path}"
