"""Every example in examples/ runs here, against local stand-ins, with time shortened.

Each test copies one example (and nothing else) into a fresh workspace and runs
it with the real CLI, as its header comment says to run it: HTTP services are
the local stub (tests/httpstub.py, 127.0.0.1), humans and callbacks are
`flowmetal signal` sent by the test, and days are arguments of a second or two.
The standard library helpers the examples load are tested directly too.
"""

import hashlib
import json
import shutil
import tarfile

import pytest

from conftest import EXAMPLES, REPO, read_run_id, run_id_of, wait_for
from httpstub import HTTPStub, Reply


@pytest.fixture
def stub():
    with HTTPStub() as s:
        yield s


def example(fm, name):
    """Copy examples/NAME into the test's workspace; return its file name there."""
    shutil.copy(EXAMPLES / name, fm.root / name)
    return name


def show(fm, run_id):
    r = fm("show", run_id, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# --- every example is valid ------------------------------------------------------


def test_examples_pass_flowmetal_check(fm):
    r = fm("check", "examples/", cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "error" not in r.stdout, r.stdout
    assert "0 error(s), 0 warning(s)" in r.stderr
    for name in ("backup.star", "remote_job.star", "approval.star", "fanout.star", "hello.star"):
        assert (EXAMPLES / name).is_file()
        text = (EXAMPLES / name).read_text()
        assert text.startswith(f"# {name}: "), f"{name} must start with a header comment naming it"
        assert "Run it" in text or "flowmetal run" in text, f"{name}'s header must say how to run it"


# --- backup.star --------------------------------------------------------------------


def _source_tree(root):
    src = root / "data"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.txt").write_text("beta\n" * 100)
    return src


def test_backup_writes_archive_and_checksum_and_prunes_old_ones(fm):
    name = example(fm, "backup.star")
    src = _source_tree(fm.root.parent)
    dest = fm.root.parent / "backups"
    dest.mkdir()
    old = ["backup-20200101T030000Z.tar.gz", "backup-20200102T030000Z.tar.gz", "backup-20200103T030000Z.tar.gz"]
    for o in old:
        (dest / o).write_text("old")
        (dest / (o + ".sha256")).write_text("old")
    (dest / "unrelated.txt").write_text("keep me")

    r = fm("run", f"{name}:backup", "-a", f"source={src}", "-a", f"dest={dest}", "-a", "keep:=2")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)

    archive = dest / result["archive"].rsplit("/", 1)[1]
    assert result["archive"] == str(archive) and archive.is_file()
    assert archive.name.startswith("backup-") and archive.name.endswith("Z.tar.gz")
    with tarfile.open(archive) as tar:
        names = {m.name for m in tar.getmembers()}
    assert {"./a.txt", "./sub/b.txt"} <= names
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert result["sha256"] == digest
    assert (dest / (archive.name + ".sha256")).read_text().split() == [digest, archive.name]
    assert result["bytes"] == archive.stat().st_size
    # keep = 2: the new archive and the newest old one stay; the two oldest go, checksums too.
    assert sorted(result["pruned"]) == old[:2]
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        [archive.name, archive.name + ".sha256", old[2], old[2] + ".sha256", "unrelated.txt"])
    assert "backed up" in r.stderr


def test_backup_of_a_missing_directory_fails_and_notify_reports_it(fm, stub):
    """The on_failure path by hand: a failed backup, then notify() called with the
    failed run's details, as the scheduler calls it (run_id, schedule, fire_time, state, error)."""
    name = example(fm, "backup.star")
    dest = fm.root.parent / "backups"
    missing = fm.root.parent / "no-such-dir"
    r = fm("run", f"{name}:backup", "-a", f"source={missing}", "-a", f"dest={dest}")
    assert r.returncode == 1
    assert f"source directory {missing} does not exist" in r.stderr
    assert not dest.exists(), "nothing is written when the source is missing"
    failed = show(fm, run_id_of(r.stderr))
    assert failed["state"] == "failed"

    stub.on("/hook", Reply(200, json={"ok": True}), method="POST")
    alerts = fm.root.parent / "alerts.log"
    details = {"run_id": failed["id"], "schedule": "nightly-backup", "fire_time": "2026-03-01T02:00:00Z",
               "state": failed["state"], "error": failed["error"]}
    r = fm("run", f"{name}:notify", "--args", json.dumps(details), "-a", f"alert_file={alerts}",
           env={"BACKUP_WEBHOOK_URL": stub.url("/hook")})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["notified"] == ["file", "webhook"]
    line = alerts.read_text()
    assert line.count("\n") == 1
    assert f"run {failed['id']} failed: backup: source directory {missing} does not exist" in line
    assert "schedule nightly-backup (fire 2026-03-01T02:00:00Z)" in line
    [post] = stub.requests_to("/hook")
    body = post.json()
    assert body["run_id"] == failed["id"] and body["state"] == "failed" and body["schedule"] == "nightly-backup"
    assert body["error"] == failed["error"]
    assert body["text"] == line.strip()


@pytest.mark.slow
def test_backup_on_failure_runs_notify_under_the_scheduler(fm):
    """The whole on_failure contract, with the real `flowmetal schedule`: the example
    with its cron set to every second and a missing source; notify() must write the alert."""
    text = (EXAMPLES / "backup.star").read_text()
    missing = fm.root.parent / "no-such-dir"
    for old, new in (('cron = "0 3 * * *"', 'cron = "* * * * * *"'), ('jitter = "5m"', 'jitter = "0s"'),
                     ('"/var/lib/app"', json.dumps(str(missing))),
                     ('"/var/backups/app"', json.dumps(str(fm.root.parent / "out")))):
        assert old in text
        text = text.replace(old, new)
    fm.write("backup.star", text)
    alerts = fm.root.parent / "alerts.log"
    fm.spawn("schedule", "backup.star", env={"BACKUP_ALERT_FILE": str(alerts)})
    try:
        wait_for(lambda: alerts.exists() and alerts.read_text().strip(), timeout=30, what="the alert line")
    finally:
        fm.kill_all()
    line = alerts.read_text().splitlines()[0]
    assert "schedule nightly-backup" in line and "failed" in line
    assert f"source directory {missing} does not exist" in line


# --- remote_job.star --------------------------------------------------------------


def test_remote_job_completes_on_its_callback_signal(fm, stub):
    name = example(fm, "remote_job.star")
    stub.on("/jobs", Reply(201, json={"id": "j7"}), method="POST")
    proc = fm.spawn("run", name, "-a", f"service={stub.url('')}", "-a", "callback_timeout=60s")
    run_id = read_run_id(proc)
    fm.wait_state(run_id, "waiting")
    r = fm("signal", run_id, "done", '{"status": "succeeded", "output": {"rows": 42}}')
    assert r.returncode == 0, r.stderr
    assert proc.wait(20) == 0, proc.err()
    assert json.loads(proc.out()) == {"job": "j7", "via": "callback", "output": {"rows": 42}}

    [post] = stub.requests_to("/jobs", "POST")
    assert post.json() == {"task": "reindex", "callback": {"run": run_id, "signal": "done"}}
    assert post.headers["idempotency-key"].startswith(run_id + ":")
    assert not stub.requests_to("/jobs/j7"), "no polling when the callback came"


def test_remote_job_falls_back_to_polling_with_backoff(fm, stub):
    name = example(fm, "remote_job.star")
    stub.on("/jobs", Reply(201, json={"id": "j8"}), method="POST")
    stub.on("/jobs/j8", Reply(200, json={"status": "queued"}), Reply(200, json={"status": "running"}),
            Reply(200, json={"status": "succeeded", "output": "done"}))
    r = fm("run", name, "-a", f"service={stub.url('')}", "-a", "callback_timeout=0.3s",
           "-a", "poll_initial=0.2s", "-a", "poll_max=0.3s")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"job": "j8", "via": "polling", "output": "done"}
    assert "no callback within 0.3s" in r.stderr
    assert len(stub.requests_to("/jobs/j8", "GET")) == 3
    journal = fm.journal(run_id_of(r.stderr))
    assert [json.loads(e["args"])["duration"] for e in journal if e["builtin"] == "sleep"] == [0.2, 0.3]
    [timeout] = [e for e in journal if e["builtin"] == "wait_signal"]
    assert json.loads(timeout["result"]) is None
    replay = fm("replay", run_id_of(r.stderr))
    assert replay.returncode == 0 and "no divergence" in replay.stdout, replay.stdout + replay.stderr


def test_remote_job_fails_when_the_job_fails(fm, stub):
    name = example(fm, "remote_job.star")
    stub.on("/jobs", Reply(201, json={"id": "j9"}), method="POST")
    stub.on("/jobs/j9", Reply(200, json={"status": "failed", "error": "disk full"}))
    r = fm("run", name, "-a", f"service={stub.url('')}", "-a", "callback_timeout=0.2s")
    assert r.returncode == 1
    assert "job j9 failed: disk full" in r.stderr
    assert show(fm, run_id_of(r.stderr))["state"] == "failed"


# --- approval.star ----------------------------------------------------------------


def test_approval_reminds_daily_then_proceeds_when_approved(fm, stub):
    name = example(fm, "approval.star")
    stub.on("/remind", Reply(200))
    marker = fm.root.parent / "deployed"
    proc = fm.spawn("run", name, "-a", "request=deploy v2", "-a", f"reminder_url={stub.url('/remind')}",
                    "-a", "day=2s", "-a", f"action=echo deployed > {marker}; echo ok")
    run_id = read_run_id(proc)
    wait_for(lambda: stub.requests_to("/remind"), timeout=15, what="the first reminder")
    r = fm("signal", run_id, "approval", '{"approved": true, "by": "ann"}')
    assert r.returncode == 0, r.stderr
    assert proc.wait(20) == 0, proc.err()
    assert json.loads(proc.out()) == {"request": "deploy v2", "approved_by": "ann", "reminders": 1, "output": "ok\n"}
    assert marker.read_text() == "deployed\n"
    [reminder] = stub.requests_to("/remind")
    assert reminder.json()["days_left"] == 2 and "waiting for approval" in reminder.json()["text"]


def test_approval_rejected_fails_the_run(fm, stub):
    """The rejection is sent before the run even waits: the signal is kept for it."""
    name = example(fm, "approval.star")
    marker = fm.root.parent / "deployed"
    run_id = fm("start", name, "-a", "request=deploy v3", "-a", f"action=touch {marker}",
                "-a", f"reminder_url={stub.url('/remind')}").stdout.strip()
    r = fm("signal", run_id, "approval", '{"approved": false, "by": "bob", "reason": "not on a Friday"}')
    assert r.returncode == 0, r.stderr
    r = fm("resume", run_id)
    assert r.returncode == 1
    row = show(fm, run_id)
    assert row["state"] == "failed"
    assert '"deploy v3" rejected by bob: not on a Friday' in row["error"]
    assert not marker.exists() and not stub.requests


def test_approval_expires_after_the_last_day(fm, stub):
    name = example(fm, "approval.star")
    stub.on("/remind", Reply(200))
    r = fm("run", name, "-a", "request=deploy v4", "-a", "day=0.3s", "-a", f"reminder_url={stub.url('/remind')}")
    assert r.returncode == 1
    assert 'no decision on "deploy v4" within 3 days; aborted' in r.stderr
    assert [q.json()["days_left"] for q in stub.requests_to("/remind")] == [2, 1, 0]
    journal = fm.journal(run_id_of(r.stderr))
    assert [e["builtin"] for e in journal if e["builtin"] in ("wait_signal", "http")] == ["wait_signal", "http"] * 3


# --- fanout.star ----------------------------------------------------------------


def test_fanout_maps_in_bounded_batches_and_reduces(fm, stub):
    name = example(fm, "fanout.star")
    for i in range(5):
        stub.on(f"/s{i}", Reply(503 if i == 3 else 200, body="x", delay=0.3))
    urls = [stub.url(f"/s{i}") for i in range(5)] + ["not a url", stub.url("/missing")]
    r = fm("run", name, "--args", json.dumps({"urls": urls, "batch": 3}))
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["checked"] == 7 and result["batches"] == 3
    assert result["up"] == [urls[0], urls[1], urls[2], urls[4]]
    assert result["down"][urls[3]] == 503 and result["down"][urls[6]] == 404
    assert result["down"]["not a url"].startswith("http(): ") and "unsupported URL scheme" in result["down"]["not a url"]

    # The parent spawned a batch, waited for it, then the next: never more than 3 at once.
    run_id = run_id_of(r.stderr)
    calls = [e["builtin"] for e in fm.journal(run_id)]
    assert calls == ["spawn"] * 3 + ["wait"] + ["spawn"] * 3 + ["wait"] + ["spawn", "wait"]
    first, second = [stub.requests_to(f"/s{i}") for i in (0, 1, 2)], [stub.requests_to(f"/s{i}") for i in (3, 4)]
    assert min(q[0].time for q in second) >= max(q[0].time for q in first) + 0.25
    st = fm.store()
    try:
        children = st.list_runs(parent_id=fm.run_row(run_id)["id"])
    finally:
        st.close()
    assert sorted(c["state"] for c in children) == ["completed"] * 6 + ["failed"]
    assert {c["function"] for c in children} == {"probe"}
    replay = fm("replay", run_id)
    assert replay.returncode == 0 and "no divergence" in replay.stdout, replay.stdout + replay.stderr


# --- the standard library helpers the examples use ----------------------------------


def call_star(tmp_path, text, function, **kwargs):
    """Load `text` as a workspace file and call one of its functions (pure code only)."""
    from flowmetal.lang.loader import Program
    from flowmetal.lang.workspace import DiskSources

    (tmp_path / "t.star").write_text(text)
    program = Program(DiskSources(tmp_path))
    try:
        return program.call("t.star", function, kwargs)
    finally:
        program.close()


def test_stdlib_collections(tmp_path):
    text = """
load("@flowmetal//collections.star", "chunks", "flatten", "partition")
def main():
    return {
        "chunks": [chunks([1, 2, 3, 4, 5], 2), chunks([], 3), chunks([1], 5), chunks(range(4), 4)],
        "flatten": flatten([[1, 2], [], [3], [[4]]]),
        "partition": partition([1, 2, 3, 4, 5], lambda x: x % 2 == 0),
    }
def bad():
    return chunks([1], 0)
"""
    assert call_star(tmp_path, text, "main") == {
        "chunks": [[[1, 2], [3, 4], [5]], [], [[1]], [[0, 1, 2, 3]]],
        "flatten": [1, 2, 3, [4]],
        "partition": [[2, 4], [1, 3, 5]],
    }
    with pytest.raises(Exception, match="n must be an integer >= 1"):
        call_star(tmp_path, text, "bad")


def test_stdlib_time_matches_python(tmp_path):
    import datetime
    import random

    rng = random.Random(7)
    seconds = [0, -1, 59.9, 951782400, 4102444800.5, 1709164800] + [rng.uniform(-2e9, 6e9) for _ in range(300)]
    text = """
load("@flowmetal//time.star", "iso_utc", "stamp", "utc")
def main(xs):
    return [[iso_utc(x), stamp(x), utc(x).weekday, utc(x).yearday] for x in xs]
"""
    got = call_star(tmp_path, text, "main", xs=seconds)
    epoch = datetime.datetime(1970, 1, 1)
    for x, (iso, st, weekday, yearday) in zip(seconds, got):
        d = epoch + datetime.timedelta(seconds=int(x // 1))
        assert iso == d.strftime("%Y-%m-%dT%H:%M:%SZ"), x
        assert st == d.strftime("%Y%m%dT%H%M%SZ"), x
        assert (weekday, yearday) == (d.weekday(), d.timetuple().tm_yday), x


def test_stdlib_error_summary(tmp_path):
    text = """
load("@flowmetal//runs.star", "error_summary")
def main(errors):
    return [error_summary(e) for e in errors]
"""
    traceback = ("Traceback (most recent call last):\n  * a.star:3, in main\n      fail(\"x\")\n"
                 "error: fail: backup: source /d does not exist\n  --> a.star:3:5\n")
    builtin = "Traceback (most recent call last):\nerror: BuiltinError: http(): bad URL: x\n"
    got = call_star(tmp_path, text, "main", errors=[traceback, builtin, "timed out", None, "", "\n  cancelled\n"])
    assert got == ["backup: source /d does not exist", "http(): bad URL: x", "timed out", "", "", "cancelled"]


def test_stdlib_poll_is_journaled_and_gives_up(fm):
    fm.write("p.star", """
load("@flowmetal//patterns.star", "poll")
def main(attempts = 5, check = True):
    return poll(lambda: "still running", lambda s: s == "done", attempts = attempts,
                initial = "0.1s", backoff = 3, max_delay = "0.5s", check = check)

def counting():
    seen = []
    def fetch():
        seen.append(now())
        return len(seen)
    return poll(fetch, lambda n: n >= 3, attempts = 5, initial = 0.1, backoff = 2)
""")
    r = fm("run", "p.star:counting")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == 3
    calls = [(e["builtin"], json.loads(e["args"]).get("duration")) for e in fm.journal(run_id_of(r.stderr))]
    assert calls == [("now", None), ("sleep", 0.1), ("now", None), ("sleep", 0.2), ("now", None)]

    r = fm("run", "p.star", "-a", "attempts:=4")
    assert r.returncode == 1
    assert 'poll(): not done after 4 attempts; last value: "still running"' in r.stderr
    sleeps = [json.loads(e["args"])["duration"] for e in fm.journal(run_id_of(r.stderr)) if e["builtin"] == "sleep"]
    assert sleeps == pytest.approx([0.1, 0.3, 0.5])
    r = fm("run", "p.star", "-a", "attempts:=1", "-a", "check:=false")
    assert r.returncode == 0 and json.loads(r.stdout) is None
