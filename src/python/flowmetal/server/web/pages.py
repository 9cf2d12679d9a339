"""The web view's routes: login/logout, runs, a run, schedules, workers, the live
endpoints (run states as JSON, a run's log as Server-Sent Events) and the actions
(cancel, signal, approve or reject a callback, fork, retry, pause, resume, trigger),
each a POST with the session's CSRF token."""

import datetime
import json
import secrets
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from flowmetal.engine import deferred
from flowmetal.errors import NotFound, UserError
from flowmetal.server import service
from flowmetal.server.routes.common import ctx
from flowmetal.server.web import views
from flowmetal.server.web.session import COOKIE, LOGIN_CSRF_COOKIE, Sessions

HERE = Path(__file__).parent
MAX_FORM = 300 * 1024


def _iso(ts):
    if ts is None:
        return ""
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def _dur(seconds):
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                         undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
ENV.filters.update(iso=_iso, dur=_dur, tojson_pretty=views.pretty)


class Web:
    def __init__(self):
        self.sessions = Sessions()

    # --- helpers -----------------------------------------------------------------------

    def render(self, request, name, status=200, **data):
        html = ENV.get_template(name).render(request=request, session=getattr(request.state, "web", None),
                                             states=views.STATES, **data)
        return HTMLResponse(html, status_code=status, headers={
            "Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "same-origin",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"})

    async def session(self, request):
        store = ctx(request).store
        s = await run_in_threadpool(self.sessions.get, store, request.cookies.get(COOKIE))
        request.state.web = s
        return s

    async def form(self, request):
        body = await request.body()
        if len(body) > MAX_FORM:
            return None
        try:
            return {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            return {}

    def page(self, fn, needed=None):
        """A page handler: a session or a redirect to /login; for a POST, the CSRF token
        and the scope `needed`, else 403 and nothing changes. User errors become a page."""
        async def handler(request):
            s = await self.session(request)
            if s is None:
                if request.method == "GET" and not request.url.path.startswith("/ui/"):
                    nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                    return RedirectResponse("/login?" + urlencode({"next": nxt}), 303)
                if request.method == "GET":
                    return JSONResponse({"error": "log in first"}, 401)
                return self.render(request, "error.html", 403, title="Refused",
                                   message="You are not logged in.")
            form = None
            if request.method == "POST":
                form = await self.form(request)
                if form is None:
                    return self.render(request, "error.html", 413, title="Too large", message="The form is too large.")
                if not s.csrf_ok(form.get("csrf")):
                    return self.render(request, "error.html", 403, title="Refused",
                                       message="The form's CSRF token is missing or wrong; reload the page and "
                                               "try again.")
                if needed and not s.allows(needed):
                    return self.render(request, "error.html", 403, title="Refused",
                                       message=f"Token {s.name!r} has scope {s.scope}; this needs {needed}.")
            try:
                return await fn(request, form) if form is not None else await fn(request)
            except (UserError, NotFound) as e:
                status = getattr(e, "http_status", 404 if isinstance(e, NotFound) else 400)
                return self.render(request, "error.html", status, title="Not possible", message=str(e))
        return handler

    # --- login ---------------------------------------------------------------------------

    async def login_form(self, request, error=None, status=200):
        token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
        nxt = request.query_params.get("next", "/")
        resp = self.render(request, "login.html", status, csrf=token, error=error, next=_safe_next(nxt))
        resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", path="/login",
                        secure=request.url.scheme == "https")
        return resp

    async def login(self, request):
        if request.method == "GET":
            return await self.login_form(request)
        form = await self.form(request) or {}
        expected = request.cookies.get(LOGIN_CSRF_COOKIE)
        if not expected or not secrets.compare_digest(expected, form.get("csrf", "")):
            return self.render(request, "error.html", 403, title="Refused",
                               message="The login form's CSRF token is missing or wrong; reload the page.")
        sid = await run_in_threadpool(self.sessions.login, ctx(request).store, form.get("token", ""))
        if sid is None:
            return await self.login_form(request, "That token is not valid (or was revoked).", 401)
        resp = RedirectResponse(_safe_next(form.get("next", "/")), 303)
        resp.set_cookie(COOKIE, sid, httponly=True, samesite="strict", path="/", max_age=int(self.sessions.lifetime),
                        secure=request.url.scheme == "https")
        resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return resp

    async def logout(self, request, form):
        self.sessions.logout(request.cookies.get(COOKIE))
        resp = RedirectResponse("/login", 303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    # --- pages -----------------------------------------------------------------------------

    async def runs(self, request):
        q = request.query_params
        f = {k: (q.get(k) or "").strip() or None for k in ("state", "target", "schedule", "parent", "q", "since",
                                                          "until")}
        top = q.get("top") == "1"
        now = ctx(request).clock.now()
        page = await run_in_threadpool(views.list_runs, ctx(request).store, state=f["state"], target=f["target"],
                                       schedule=f["schedule"], parent=f["parent"], top=top, prefix=f["q"],
                                       cursor=q.get("cursor") or None, since=f["since"], until=f["until"], now=now)
        within = {k: service.parse_time(f[k], k, now) for k in ("since", "until")}
        keep = {k: v for k, v in {**f, "top": "1" if top else None}.items() if v}
        nxt = "?" + urlencode({**keep, "cursor": page["next"]}) if page["next"] else None
        return self.render(request, "runs.html", runs=page["runs"], f=f, top=top, next_url=nxt, within=within,
                           first_url="?" + urlencode(keep) if q.get("cursor") else None)

    async def run(self, request):
        after = request.query_params.get("after", "0")
        after = int(after) if after.isdigit() and len(after) < 12 else 0
        c = ctx(request)
        doc = await run_in_threadpool(views.run_page, c.store, request.path_params["id"], after, c.clock.now(),
                                      request.state.web.allows("write"))
        if doc["run"]["id"] != request.path_params["id"]:
            return RedirectResponse(f"/runs/{doc['run']['id']}", 303)
        return self.render(request, "run.html", now=c.clock.now(), **doc)

    async def schedules(self, request):
        from flowmetal.server.routes.schedules import schedules_document

        c = ctx(request)
        doc = await run_in_threadpool(schedules_document, c.store, c.declared_schedules(), c.clock.now())
        return self.render(request, "schedules.html", schedules=doc["schedules"],
                           flash=request.query_params.get("done"))

    async def workers(self, request):
        c = ctx(request)
        doc = await run_in_threadpool(views.workers, c.store, c.clock.now())
        return self.render(request, "workers.html", **doc)

    # --- live -------------------------------------------------------------------------------

    async def states(self, request):
        ids = [i for i in request.query_params.get("ids", "").split(",") if i][:200]
        return JSONResponse(await run_in_threadpool(views.states, ctx(request).store, ids),
                            headers={"Cache-Control": "no-store"})

    async def run_state(self, request):
        c = ctx(request)
        run = await run_in_threadpool(c.store.find_run, request.path_params["id"])
        n = await run_in_threadpool(lambda: len(c.store.journal(run["id"])))
        return JSONResponse({"state": run["state"], "entries": n, "updated_at": run.get("updated_at")},
                            headers={"Cache-Control": "no-store"})

    async def log_stream(self, request):
        from flowmetal.server.routes.runs import _stream

        c = ctx(request)
        run = await run_in_threadpool(c.store.find_run, request.path_params["id"])
        after = service.parse_log_cursor(request.query_params.get("after") or request.headers.get("last-event-id"))
        return StreamingResponse(_stream(c, run["id"], after), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # --- actions ----------------------------------------------------------------------------

    async def cancel(self, request, form):
        c = ctx(request)
        doc = await run_in_threadpool(service.cancel, c.store, c.clock, request.path_params["id"])
        c.changes.notify()
        return RedirectResponse(f"/runs/{doc['id']}", 303)

    async def signal(self, request, form):
        c = ctx(request)
        name = (form.get("name") or "").strip()
        text = form.get("payload") or ""
        if not 0 < len(name) <= 200:
            raise UserError("signal name: expected 1 to 200 characters")
        if not text.strip():
            text = "null"
        try:
            json.loads(text)
        except ValueError as e:
            raise UserError(f"the signal's payload is not JSON: {e}") from None
        doc = await run_in_threadpool(service.signal, c.store, c.clock, request.path_params["id"], name, text)
        c.changes.notify()
        return RedirectResponse(f"/runs/{doc['id']}", 303)

    async def decide(self, request, form):
        """Approve or reject an approval callback: the payload the /callbacks route's
        Approve and Reject buttons post, {"approved": true} or {"approved": false}."""
        c = ctx(request)
        decision = request.path_params["decision"]
        if decision not in ("approve", "reject"):
            raise NotFound(f"no action {decision!r}")
        seq = _seq(request.path_params["seq"])
        run = await run_in_threadpool(c.store.find_run, request.path_params["id"])
        await run_in_threadpool(views.approval, c.store, run["id"], seq)
        done = await run_in_threadpool(deferred.complete_effect, c.store, run["id"], seq,
                                       {"approved": decision == "approve"}, None, c.clock)
        if not done.ok:
            raise service.Conflict(done.message[0].upper() + done.message[1:] + ".")
        c.changes.notify()
        return RedirectResponse(f"/runs/{run['id']}", 303)

    async def fork(self, request, form):
        """Fork a run at a journal position (`at`: the entries kept) on its pinned code or, with
        current=1, on the files on disk; retry forks a failed run before its failing entry.
        A prefix that does not replay is refused (nothing is created) and shown."""
        from flowmetal.engine import fork

        c = ctx(request)
        ref = request.path_params["id"]
        try:
            if request.url.path.endswith("/retry"):
                new_id, _ = await run_in_threadpool(fork.retry_run, c.store, ref, c.clock)
            else:
                at = _seq(form.get("at", ""), low=0)
                new_id = await run_in_threadpool(fork.fork_run, c.store, ref, at, form.get("current") == "1",
                                                 c.clock)
        except fork.ForkRefused as e:
            head, _, detail = str(e).partition("\n")
            return self.render(request, "error.html", 409, title="Fork refused", message=head,
                               detail=detail, note="Nothing was created.", back=f"/runs/{ref}")
        c.changes.notify()
        return RedirectResponse(f"/runs/{new_id}", 303)

    async def schedule_action(self, request, form):
        from flowmetal.schedule import commands

        c = ctx(request)
        name, action = request.path_params["name"], request.path_params["action"]
        fn = {"pause": commands.pause_schedule, "resume": commands.resume_schedule}.get(action)
        if fn is not None:
            await run_in_threadpool(fn, c.store, name, c.clock.now())
        elif action == "trigger":
            await run_in_threadpool(commands.trigger_schedule, c.store, c.root, name, c.clock.now())
        else:
            raise NotFound(f"no action {action!r}")
        c.changes.notify()
        return RedirectResponse("/schedules?" + urlencode({"done": f"{action}: {name}"}), 303)


def _seq(text, low=1):
    if not (isinstance(text, str) and text.isdigit() and len(text) < 10 and int(text) >= low):
        raise UserError(f"journal position {text!r}: expected a whole number, {low} or more")
    return int(text)


def _safe_next(nxt):
    return nxt if isinstance(nxt, str) and nxt.startswith("/") and not nxt.startswith("//") and "\\" not in nxt \
        else "/"


def routes():
    w = Web()
    return [
        Route("/login", w.login, methods=["GET", "POST"]),
        Route("/logout", w.page(w.logout), methods=["POST"]),
        Route("/", w.page(w.runs)),
        Route("/runs/{id}", w.page(w.run)),
        Route("/runs/{id}/cancel", w.page(w.cancel, "write"), methods=["POST"]),
        Route("/runs/{id}/signal", w.page(w.signal, "write"), methods=["POST"]),
        Route("/runs/{id}/callbacks/{seq}/{decision}", w.page(w.decide, "write"), methods=["POST"]),
        Route("/runs/{id}/fork", w.page(w.fork, "write"), methods=["POST"]),
        Route("/runs/{id}/retry", w.page(w.fork, "write"), methods=["POST"]),
        Route("/schedules", w.page(w.schedules)),
        Route("/schedules/{name}/{action}", w.page(w.schedule_action, "write"), methods=["POST"]),
        Route("/workers", w.page(w.workers)),
        Route("/ui/states", w.page(w.states)),
        Route("/ui/runs/{id}/state", w.page(w.run_state)),
        Route("/ui/runs/{id}/log", w.page(w.log_stream)),
        Mount("/static", StaticFiles(directory=HERE / "static", follow_symlink=True), name="static"),
    ]
