"""Talking to the outside world, end to end: workflows run by the `flowmetal` CLI
calling `http` and `sh` against a local HTTP stub (SPEC sections 3 and 4).

Every server here is on 127.0.0.1 and started by the test. Kill-and-resume tests
SIGKILL the CLI's process group and resume with `flowmetal resume`.
"""

import json
import os
import signal
import time
import uuid

import pytest

from conftest import both_stores, read_run_id, run_id_of, wait_for
from httpstub import HTTPStub, Reply, refused_url, silent_server


@pytest.fixture
def stub():
    with HTTPStub() as s:
        yield s


def _kill(proc):
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _run(fm, name, source, *args, env=None, timeout=60):
    """Write `source` as `name`, run it in the foreground; returns (completed process, run id)."""
    fm.write(name, source)
    r = fm("run", name, *args, env=env, timeout=timeout)
    return r, run_id_of(r.stderr)


class _Done:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

    @property
    def run_id(self):
        return run_id_of(self.stderr)


def _run_all(fm, *jobs, timeout=60):
    """Run several `flowmetal run`s at once (to save start-up time); each job is (file, *args).

    Returns one result per job with returncode, stdout, stderr and run_id."""
    procs = [fm.spawn("run", *job) for job in jobs]
    done = []
    for proc in procs:
        proc.wait(timeout)
        done.append(_Done(proc.returncode, proc.out(), proc.err()))
    return done


def _builtins(fm, run_id):
    return [e["builtin"] for e in fm.journal(run_id)]


def _alive(pid):
    """Is process `pid` running (a zombie does not count)?"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


# --- requests: GET, POST json, headers, idempotency key ----------------------

REQUESTS = """
def main(base):
    g = http(base + "/get?q=1", headers = {"X-Custom": "abc"})
    p = http(base + "/post", method = "POST", json = {"n": 1, "s": "é"}, headers = {"X-Other": "2"})
    return {"get": g.json, "get_status": g.status, "reply_header": g.headers["x-reply"],
            "post_status": p.status, "post": p.json, "ok": g.ok and p.ok}
"""


@both_stores
def test_get_and_post_json_with_headers_send_the_idempotency_key(fm, stub):
    stub.on("/get", Reply(200, json={"hello": "world"}, headers={"X-Reply": "yes"}), method="GET")
    stub.on("/post", lambda req: Reply(201, json={"got": req.json()}), method="POST")
    r, run_id = _run(fm, "req.star", REQUESTS, "-a", f"base={stub.url('')}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {
        "get": {"hello": "world"}, "get_status": 200, "reply_header": "yes",
        "post_status": 201, "post": {"got": {"n": 1, "s": "é"}}, "ok": True,
    }
    (get,), (post,) = stub.requests_to("/get"), stub.requests_to("/post")
    assert get.method == "GET" and get.query == {"q": ["1"]}
    assert get.headers["x-custom"] == "abc"
    assert get.headers["idempotency-key"] == f"{run_id}:1"
    assert get.headers["user-agent"].startswith("flowmetal/")
    assert post.method == "POST" and post.json() == {"n": 1, "s": "é"}
    assert post.headers["content-type"] == "application/json"
    assert post.headers["x-other"] == "2"
    assert post.headers["idempotency-key"] == f"{run_id}:2"
    assert _builtins(fm, run_id) == ["http", "http"]


PAY = """
def main(url):
    r = http(url, method = "POST", json = {"amount": 5})
    return r.json
"""


@both_stores
@pytest.mark.slow
def test_idempotency_key_is_stable_across_kill_and_resume(fm, stub):
    # The first request hangs (the process is killed while it waits); the second answers.
    stub.on("/pay", Reply(200, json={"paid": 1}, delay=30.0), Reply(200, json={"paid": 2}))
    fm.write("pay.star", PAY)
    proc = fm.spawn("run", "pay.star", "-a", f"url={stub.url('/pay')}")
    run_id = read_run_id(proc)
    wait_for(lambda: stub.requests_to("/pay"), what="the first request")
    _kill(proc)
    (entry,) = fm.journal(run_id)
    assert entry["builtin"] == "http" and entry["status"] == "started"  # no completion recorded
    r = fm("resume", run_id)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"paid": 2}
    first, second = stub.requests_to("/pay")
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"] == f"{run_id}:1"
    assert first.json() == second.json() == {"amount": 5}
    (entry,) = fm.journal(run_id)
    assert entry["status"] == "completed" and entry["reexecuted"] == 1
    shown = fm("show", run_id)
    assert shown.returncode == 0 and "re-executed" in shown.stdout


# --- retries ------------------------------------------------------------------

FLAKY = """
def main(url):
    r = http(url, retry = retry_policy(initial = "0.1s", jitter = False))
    return {"status": r.status, "json": r.json}
"""


@both_stores
def test_503_twice_then_success_is_three_attempts_in_the_journal(fm, stub):
    stub.on("/flaky", Reply(503), Reply(503), Reply(200, json={"fine": True}))
    r, run_id = _run(fm, "flaky.star", FLAKY, "-a", f"url={stub.url('/flaky')}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"status": 200, "json": {"fine": True}}
    journal = fm.journal(run_id)
    assert [e["builtin"] for e in journal] == ["http", "retry_delay", "http", "retry_delay", "http"]
    statuses = [json.loads(e["result"])["status"] for e in journal if e["builtin"] == "http"]
    assert statuses == [503, 503, 200]
    assert [json.loads(e["args"]).get("attempt", 1) for e in journal if e["builtin"] == "http"] == [1, 2, 3]
    assert all(e["status"] == "completed" for e in journal)
    requests = stub.requests_to("/flaky")
    assert len(requests) == 3
    # Retries are the same logical request: they carry the key of the first attempt.
    assert {q.headers["idempotency-key"] for q in requests} == {f"{run_id}:1"}


BUSY = """
def main(base):
    # Results feed later calls: replay must give the program the very same values.
    g = http(base + "/hello")
    s = sh("echo hi")
    sh("true", env = {"PREVIOUS": json.encode([g, s])})
    r = http(base + "/busy", retry = retry_policy(initial = "0.1s", jitter = False))
    return r.body
"""


@both_stores
def test_retry_after_is_honoured(fm, stub):
    stub.on("/hello", Reply(200, json={"b": 1, "a": 2}, headers={"X-Z": "z"}))
    stub.on("/busy", Reply(503, headers={"Retry-After": "2"}), Reply(200, body="done"))
    r, run_id = _run(fm, "busy.star", BUSY, "-a", f"base={stub.url('')}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == "done"
    first, second = stub.requests_to("/busy")
    assert 2.0 <= second.time - first.time < 4.0, second.time - first.time
    journal = fm.journal(run_id)
    assert [e["builtin"] for e in journal] == ["http", "sh", "sh", "http", "retry_delay", "http"]
    assert json.loads(journal[4]["args"])["delay"] == 2.0
    # The delay suspended the run, and its next execution replayed the first four entries.
    assert fm.run_row(run_id)["executions"] == 2


RETRY_4XX = """
def main(url, retry_4xx):
    policy = retry_policy(initial = "0.1s", jitter = False, retry_on = ["4xx"] if retry_4xx else None)
    r = http(url, retry = policy, check = False)
    return {"status": r.status, "body": r.body}
"""


# SQLite only: what it checks happens before or beside the store (the suite's time budget)
def test_retry_on_4xx_retries_a_404_and_the_default_does_not(fm, stub):
    stub.on("/a", Reply(404, body="nope"), Reply(200, body="found"))
    stub.on("/b", Reply(404, body="nope"), Reply(200, body="found"))
    stub.on("/c", Reply(503))
    fm.write("r4.star", RETRY_4XX)
    fm.write("down.star", 'def main(url):\n    return http(url, retry = retry_policy(attempts = 2, initial = "0.1s")).body\n')
    retried, plain, down = _run_all(fm, ("r4.star", "-a", f"url={stub.url('/a')}", "-a", "retry_4xx:=true"),
                                    ("r4.star", "-a", f"url={stub.url('/b')}", "-a", "retry_4xx:=false"),
                                    ("down.star", "-a", f"url={stub.url('/c')}"))
    # check = True (the default) fails the run once the attempts are used up.
    assert down.returncode == 1
    assert "http() failed after 2 attempts: HTTP 503 Service Unavailable" in down.stderr, down.stderr
    assert _builtins(fm, down.run_id) == ["http", "retry_delay", "http"]
    assert len(stub.requests_to("/c")) == 2
    assert retried.returncode == 0, retried.stderr
    assert json.loads(retried.stdout) == {"status": 200, "body": "found"}
    assert _builtins(fm, retried.run_id) == ["http", "retry_delay", "http"]
    assert len(stub.requests_to("/a")) == 2

    assert plain.returncode == 0, plain.stderr
    assert json.loads(plain.stdout) == {"status": 404, "body": "nope"}
    assert _builtins(fm, plain.run_id) == ["http"]
    assert len(stub.requests_to("/b")) == 1


SH_RETRY = """
def main(keys):
    # Fails until its third attempt; each attempt appends its idempotency key.
    r = sh("echo $FLOWMETAL_IDEMPOTENCY_KEY >> %s; n=$(wc -l < %s); echo attempt $n; [ $n -ge 3 ] || exit 7" % (keys, keys),
           retry = retry_policy(attempts = 4, initial = "0.1s", jitter = False))
    return r.stdout
"""


@both_stores
def test_sh_retry_retries_a_nonzero_exit_and_records_each_attempt(fm):
    keys, keys2 = fm.root / "keys.txt", fm.root / "keys2.txt"
    fm.write("shr.star", SH_RETRY)
    fm.write("shr2.star", SH_RETRY.replace("attempts = 4", "attempts = 2"))
    r, exhausted = _run_all(fm, ("shr.star", "-a", f"keys={keys}"), ("shr2.star", "-a", f"keys={keys2}"))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout).strip() == "attempt 3"
    journal = fm.journal(r.run_id)
    assert [e["builtin"] for e in journal] == ["sh", "retry_delay", "sh", "retry_delay", "sh"]
    codes = [json.loads(e["result"])["exit_code"] for e in journal if e["builtin"] == "sh"]
    assert codes == [7, 7, 0]
    assert keys.read_text().split() == [f"{r.run_id}:1"] * 3  # FLOWMETAL_IDEMPOTENCY_KEY of every attempt

    assert exhausted.returncode == 1
    assert "sh() failed after 2 attempts: exit code 7" in exhausted.stderr
    assert fm.run_row(exhausted.run_id)["state"] == "failed"
    assert _builtins(fm, exhausted.run_id) == ["sh", "retry_delay", "sh"]


# SQLite only: what it checks happens before or beside the store (the suite's time budget)
def test_bad_retry_policy_arguments_are_named(fm):
    cases = [
        ("retry_policy(attempts = 0)", "attempts must be an integer >= 1, got 0"),
        ('retry_policy(initial = "soon")', "initial"),
        ("retry_policy(backoff = 0.5)", "backoff must be a number >= 1"),
        ('retry_policy(retry_on = ["5xx", "bogus"])', "unknown outcome 'bogus'"),
        ("retry_policy(tries = 3)", "tries"),
        ("3", "argument retry"),
    ]
    for i, (expr, _) in enumerate(cases):
        fm.write(f"bad{i}.star", f'def main():\n    return sh("true", retry = {expr}).ok\n')
    # At the top level, a bad policy is a load error at file:line.
    fm.write("top.star", 'P = retry_policy(attempts = 0)\n\ndef main():\n    return 1\n')
    *results, top = _run_all(fm, *[(f"bad{i}.star",) for i in range(len(cases))], ("top.star",))
    for (expr, message), r in zip(cases, results):
        assert r.returncode == 1, (expr, r.stderr)
        assert message in r.stderr, (expr, r.stderr)
        assert 'File "' not in r.stderr  # the workflow's traceback, not Python's
        assert fm.run_row(r.run_id)["state"] == "failed"
    assert top.returncode == 2
    assert "top.star:1:" in top.stderr and "attempts must be an integer >= 1" in top.stderr


@both_stores
@pytest.mark.slow
def test_kill_during_a_retry_delay_resumes_with_the_remaining_delay(fm, stub):
    stub.on("/later", Reply(503), Reply(200, body="finally"))
    source = FLAKY.replace('"0.1s"', '"4s"').replace('return {"status": r.status, "json": r.json}', "return r.body")
    fm.write("later.star", source)
    proc = fm.spawn("run", "later.star", "-a", f"url={stub.url('/later')}")
    run_id = read_run_id(proc)
    fm.wait_state(run_id, "waiting")
    (first,) = stub.requests_to("/later")
    time.sleep(max(0.0, first.time + 1.0 - time.time()))
    _kill(proc)
    time.sleep(max(0.0, first.time + 2.0 - time.time()))
    r = fm("resume", run_id)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == "finally"
    first, second = stub.requests_to("/later")
    assert 3.8 <= second.time - first.time < 5.0, second.time - first.time  # not ~6 s
    assert _builtins(fm, run_id) == ["http", "retry_delay", "http"]


# --- failures of the outside world -------------------------------------------

FAILING = """
def main(url, check):
    r = http(url, timeout = "1s", check = check)
    return {"ok": r.ok, "status": r.status, "error": r.error, "then": "continued"}
"""


def _fails_then_returns_with_check_false(fm, url, message):
    fm.write("f.star", FAILING)
    r, unchecked = _run_all(fm, ("f.star", "-a", f"url={url}", "-a", "check:=true"),
                            ("f.star", "-a", f"url={url}", "-a", "check:=false"))
    assert r.returncode == 1, r.stderr
    assert fm.run_row(r.run_id)["state"] == "failed"
    assert f"http() failed: {message}" in r.stderr, r.stderr
    assert 'File "' not in r.stderr  # the workflow's traceback, not Python's
    assert r.stdout == ""

    assert unchecked.returncode == 0, unchecked.stderr
    value = json.loads(unchecked.stdout)
    assert value["ok"] is False and value["status"] is None and value["then"] == "continued"
    assert message in value["error"]
    assert fm.run_row(unchecked.run_id)["state"] == "completed"


# SQLite only: what it checks happens before or beside the store (the suite's time budget)
def test_connection_refused_fails_the_run_or_is_a_value(fm):
    url = refused_url("/x")
    port = url.split(":")[2].split("/")[0]
    _fails_then_returns_with_check_false(fm, url, f"connection refused: 127.0.0.1:{port}")


# SQLite only: what it checks happens before or beside the store (the suite's time budget)
def test_a_server_that_never_answers_times_out(fm):
    with silent_server() as url:
        t0 = time.time()
        _fails_then_returns_with_check_false(fm, url, "timed out after 1s")
        assert time.time() - t0 < 10


# --- sh: timeout and huge output ------------------------------------------------

SH_TIMEOUT = """
def main(pidfile, check):
    r = sh("sleep 100 & echo $! > %s; sleep 100" % pidfile, timeout = "1s", check = check)
    return {"timed_out": r.timed_out, "ok": r.ok, "error": r.error, "duration": r.duration}
"""


# SQLite only: what it checks happens before or beside the store (the suite's time budget)
def test_sh_timeout_ends_the_command_and_its_children(fm):
    pid1, pid2 = fm.root / "bg1.pid", fm.root / "bg2.pid"
    fm.write("to.star", SH_TIMEOUT)
    t0 = time.time()
    r, checked = _run_all(fm, ("to.star", "-a", f"pidfile={pid1}", "-a", "check:=false"),
                          ("to.star", "-a", f"pidfile={pid2}", "-a", "check:=true"))
    assert time.time() - t0 < 8  # two CLIs' start-up included
    assert r.returncode == 0, r.stderr
    value = json.loads(r.stdout)
    assert value["timed_out"] is True and value["ok"] is False
    assert value["error"] == "timed out after 1s"
    assert 0.9 <= value["duration"] < 2.0
    (entry,) = fm.journal(r.run_id)
    assert entry["ended_at"] - entry["started_at"] < 2.0
    for pidfile in (pid1, pid2):
        bg = int(pidfile.read_text())
        wait_for(lambda: not _alive(bg), timeout=1, what=f"background child {bg} to end")

    assert checked.returncode == 1
    assert "sh() failed: timed out after 1s" in checked.stderr
    assert fm.run_row(checked.run_id)["state"] == "failed"
    (entry,) = fm.journal(checked.run_id)
    assert entry["ended_at"] - entry["started_at"] < 2.0


BIG_OUTPUT = """
def main():
    r = sh("yes 0123456789abcdef | head -c 52428800")
    return {"ok": r.ok, "length": len(r.stdout), "head": r.stdout[:17], "tail": r.stdout[-80:]}
"""


# SQLite only: what it checks happens before or beside the store (the suite's time budget)
def test_sh_printing_50_mb_finishes_and_is_truncated_with_a_note(fm):
    t0 = time.time()
    r, run_id = _run(fm, "big.star", BIG_OUTPUT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert time.time() - t0 < 20
    value = json.loads(r.stdout)
    assert value["ok"] is True and value["head"] == "0123456789abcdef\n"
    assert value["tail"].endswith("[flowmetal: output truncated, 49.0 MiB more not shown]")
    assert 1024 * 1024 < value["length"] < 1024 * 1024 + 200
    (entry,) = fm.journal(run_id)
    assert len(entry["result"]) < 4096  # the captured output is a blob, not in the journal row
    recorded = json.loads(entry["result"])
    assert recorded["$value"]["exit_code"] == 0 and recorded["$value"]["stderr"] == ""
    st = fm.store()
    try:
        stdout = json.loads(st.get_blob(recorded["$parts"]["stdout"]))
    finally:
        st.close()
    assert stdout.startswith("0123456789abcdef\n")
    assert stdout.endswith("\n[flowmetal: output truncated, 49.0 MiB more not shown]")


# --- secrets ---------------------------------------------------------------------

SECRETS = """
def main(url):
    tok = secret("FM_TOKEN")
    a = sh("echo token=$TOK", env = {"TOK": tok})
    b = sh(["echo", "argv", tok])
    c = sh("echo inline " + tok + " >&2")
    h = http(url, headers = {"Authorization": "Bearer " + tok})
    print("printing", tok)
    log("logging " + tok)
    return {"length": len(tok), "a": a.stdout, "b": b.stdout, "c": c.stderr,
            "body": h.body, "echo_header": h.headers["x-echo"]}
"""


def _raw_database_bytes(fm):
    if fm.url:  # PostgreSQL: every row of every table, as text
        st = fm.store()
        tables = [r[0] for r in st.x("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return "".join(st.q(f"SELECT coalesce(string_agg(t::text, ''), '') FROM {t} t").fetchone()[0]
                       for t in tables).encode()
    data = b""
    for suffix in ("", "-wal", "-shm"):
        path = f"{fm.db}{suffix}"
        if os.path.exists(path):
            with open(path, "rb") as f:
                data += f.read()
    return data


# SQLite only: reads the SQLite file and its WAL byte for byte
def test_a_secret_never_reaches_the_database_or_the_logs(fm, stub):
    token = "tok-" + uuid.uuid4().hex
    stub.on("/auth", lambda req: Reply(200, body="auth=" + req.headers.get("authorization", ""),
                                       headers={"X-Echo": req.headers.get("authorization", "")}))
    fm.write("sec.star", SECRETS)
    # A bad argument quoting the secret: the error says *** instead.
    fm.write("badarg.star", 'def main():\n    return sh("true", timeout = secret("FM_TOKEN")).ok\n')
    # Keep a connection open so that the WAL is not checkpointed away when the CLI exits.
    keeper = fm.store()
    try:
        fm.env["FM_TOKEN"] = token
        r, bad = _run_all(fm, ("sec.star", "-a", f"url={stub.url('/auth')}"), ("badarg.star",))
        run_id = r.run_id
        assert r.returncode == 0, r.stderr
        assert bad.returncode == 1 and "sh(): argument timeout" in bad.stderr and "got '***'" in bad.stderr
        assert token not in bad.stderr
        value = json.loads(r.stdout)
        assert value == {"length": len(token), "a": "token=***\n", "b": "argv ***\n", "c": "inline ***\n",
                         "body": "auth=Bearer ***", "echo_header": "Bearer ***"}
        (req,) = stub.requests_to("/auth")
        assert req.headers["authorization"] == f"Bearer {token}"  # the server got the real value
        assert os.path.exists(f"{fm.db}-wal") and os.path.getsize(f"{fm.db}-wal") > 0
        raw = _raw_database_bytes(fm)
    finally:
        keeper.close()
    assert token.encode() not in raw
    assert token not in r.stderr  # the streamed log
    logs = fm("logs", run_id)
    assert logs.returncode == 0
    assert "printing ***" in logs.stdout and "logging ***" in logs.stdout and "token=***" in logs.stdout
    assert token not in logs.stdout + logs.stderr
    for args in (("show", run_id), ("show", run_id, "--json")):
        shown = fm(*args)
        assert shown.returncode == 0, shown.stderr
        assert token not in shown.stdout + shown.stderr
    assert token.encode() not in _raw_database_bytes(fm)


SECRET_RESUME = """
def main():
    tok = secret("FM_TOKEN")
    a = sh("echo $T", env = {"T": tok})
    sleep("2s")
    b = sh(["echo", tok])
    return {"length": len(tok), "a": a.stdout, "b": b.stdout}
"""


@both_stores
@pytest.mark.slow
def test_a_run_using_a_secret_resumes_and_replays(fm):
    token = "tok-" + uuid.uuid4().hex
    fm.write("sr.star", SECRET_RESUME)
    proc = fm.spawn("run", "sr.star", env={"FM_TOKEN": token})
    run_id = read_run_id(proc)
    fm.wait_state(run_id, "waiting")
    _kill(proc)
    # The secret is read again by the execution that resumes the run.
    r = fm("resume", run_id, env={"FM_TOKEN": token})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"length": len(token), "a": "***\n", "b": "***\n"}
    assert fm.run_row(run_id)["executions"] == 2
    # Replay performs nothing and needs no secret.
    env = {k: v for k, v in fm.env.items() if k != "FM_TOKEN"}
    rep = fm("replay", run_id, env=env)
    assert rep.returncode == 0 and "no divergence" in rep.stdout, rep.stdout + rep.stderr
    assert token.encode() not in _raw_database_bytes(fm)


@both_stores
def test_a_missing_secret_fails_the_run_with_a_clear_message(fm):
    fm.env.pop("FM_MISSING_TOKEN", None)
    fm.env.pop("FM_MISSING_TOKEN_FILE", None)
    r, run_id = _run(fm, "miss.star", 'def main():\n    return len(secret("FM_MISSING_TOKEN"))\n')
    assert r.returncode == 1
    assert "secret(): environment variable FM_MISSING_TOKEN (or FM_MISSING_TOKEN_FILE) is not set" in r.stderr
    assert 'File "' not in r.stderr  # the workflow's traceback, not Python's
    assert fm.run_row(run_id)["state"] == "failed"


# --- journal size: large results are blobs, stored once ---------------------------

BIG_BODY = """
def main(url):
    a = http(url)
    b = http(url)
    return {"a": len(a.body), "b": len(b.body), "same": a.body == b.body, "status": b.status}
"""


@both_stores
def test_a_large_body_downloaded_twice_is_one_blob(fm, stub):
    body = "".join(f"{i:08d} flowmetal blob line\n" for i in range(40_000))  # ~1.1 MB
    stub.on("/big", Reply(200, body=body))
    r, run_id = _run(fm, "bb.star", BIG_BODY, "-a", f"url={stub.url('/big')}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"a": len(body), "b": len(body), "same": True, "status": 200}
    journal = fm.journal(run_id)
    assert [e["builtin"] for e in journal] == ["http", "http"]
    assert all(len(e["result"]) < 4096 for e in journal), [len(e["result"]) for e in journal]
    first, second = (json.loads(e["result"]) for e in journal)
    assert first["$parts"] == second["$parts"] and set(first["$parts"]) == {"body"}
    assert first["$value"]["status"] == 200 and "date" in first["$value"]["headers"]
    st = fm.store()
    try:
        blobs = st.x("SELECT data FROM blobs").fetchall()
    finally:
        st.close()
    assert len(blobs) == 1
    assert len(blobs[0][0]) >= len(body)
    for args in (("show", run_id), ("show", run_id, "--json")):
        shown = fm(*args)
        assert shown.returncode == 0, shown.stderr
        assert "http" in shown.stdout
    assert len(fm("show", run_id).stdout) < 20_000


# --- the journal encoding of results ------------------------------------------------

# SQLite only: the gate's encoding in process, whatever the store
def test_results_that_look_like_blob_references_round_trip(tmp_path):
    from flowmetal.clock import SYSTEM
    from flowmetal.engine.gate import BLOB_THRESHOLD, Gate
    from flowmetal.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "x.db")
    try:
        gate = Gate(store, {"id": "r1"}, "owner", SYSTEM, None)
        big = "x" * (BLOB_THRESHOLD + 10)
        values = [
            None, 1, "text", [1, 2], {"a": 1},
            {"$blob": "not-a-hash"}, {"$value": 5}, {"$parts": {}, "$value": {}}, {"$x": 1, "$y": 2},
            {"$blob": big},
            {"body": big, "status": 200, "headers": {"b": "1", "a": "2"}},
            {"b": big, "a": big, "c": "small"},
            [big, big],
            big,
            {f"k{i}": "v" * 900 for i in range(200)},  # many medium fields: one blob
        ]
        for value in values:
            text = gate._encode(value)
            assert len(text) <= BLOB_THRESHOLD
            decoded = gate._decode(text)
            assert decoded == value
            assert json.dumps(decoded) == json.dumps(json.loads(json.dumps(value, sort_keys=True)))  # key order
    finally:
        store.close()
