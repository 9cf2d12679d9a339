"""Validation of `schedule(...)` declarations: every problem, readable, at once."""

import dataclasses

import pytest

from flowmetal.schedule.spec import BadTarget, ScheduleSpec, validate_schedule

RUN = "//jobs/backup.star:backup"


def ok(**kwargs):
    base = {"name": "nightly", "cron": "0 3 * * *", "run": RUN}
    base.update(kwargs)
    spec, problems = validate_schedule(base, file="jobs/backup.star", line=7)
    assert problems == []
    assert isinstance(spec, ScheduleSpec)
    return spec


def bad(**kwargs):
    base = {"name": "nightly", "cron": "0 3 * * *", "run": RUN}
    base.update(kwargs)
    base = {k: v for k, v in base.items() if v is not ...}
    spec, problems = validate_schedule(base, file="jobs/backup.star", line=7)
    assert spec is None
    assert problems
    return problems


def test_minimal_schedule_gets_the_documented_defaults():
    spec = ok()
    assert (spec.name, spec.cron, spec.run, spec.file, spec.line) == ("nightly", "0 3 * * *", RUN, "jobs/backup.star", 7)
    assert spec.args == {} and spec.timezone == "UTC" and spec.catchup == "latest"
    assert spec.catchup_window is None and spec.max_catchup == 100 and spec.overlap == "skip"
    assert spec.jitter == 0.0 and spec.timeout is None and spec.on_failure is None and spec.enabled is True


def test_full_schedule_parses_durations_to_seconds():
    spec = ok(args={"target": "prod"}, timezone="Europe/Berlin", catchup="all", catchup_window="1d",
              max_catchup=5, overlap="buffer_one", jitter="5m", timeout="1h30m",
              on_failure="//jobs/backup.star:alert", enabled=False)
    assert spec.catchup_window == 86400.0 and spec.jitter == 300.0 and spec.timeout == 5400.0
    assert spec.args == {"target": "prod"} and spec.on_failure == "//jobs/backup.star:alert"
    assert spec.enabled is False and spec.max_catchup == 5 and spec.overlap == "buffer_one"
    assert ok(jitter=30).jitter == 30.0


@pytest.mark.parametrize("cron", ["0 3 * * *", "* * * * * *", "0 3 * * * 30", "@hourly", "@daily", "@weekly",
                                  "@monthly", "@yearly", "@annually", "@midnight", "0 9 * * mon-fri"])
def test_accepted_cron_forms(cron):
    assert ok(cron=cron).cron == cron


def test_local_timezone_is_accepted():
    assert ok(timezone="local").timezone == "local"


def test_messages_match_the_documented_wording():
    problems = bad(cron="61 * * * *")
    assert problems == ['schedule "nightly": invalid cron expression "61 * * * *": minute field "61" is not acceptable, out of range']
    assert bad(timezone="Mars/Base") == [
        'schedule "nightly": unknown timezone "Mars/Base" (use an IANA name like "Europe/Berlin", or "local")']
    assert bad(overlap="sometimes") == [
        'schedule "nightly": overlap must be one of "skip", "buffer_one", "buffer_all", "allow", "cancel_other" — got "sometimes"']


def test_all_problems_are_reported_at_once():
    problems = bad(cron="0 0 31 2 *", timezone="Mars/Base", catchup="maybe", overlap="never",
                   max_catchup=0, jitter="soon", timeout=0, args=["x"], enabled="yes", colour="blue",
                   catchup_window="-1", on_failure=3)
    assert len(problems) == 12, problems
    assert all(p.startswith('schedule "nightly": ') for p in problems)
    text = "\n".join(problems)
    for needle in ("never fires", "Mars/Base", 'catchup must be one of "none", "latest", "all"', "overlap must be one of",
                   "max_catchup must be a whole number", "jitter must be", "timeout must be longer than 0s",
                   "args must be a dict", "enabled must be True or False", 'unknown parameter "colour"',
                   "catchup_window must be", "on_failure must be a top-level function"):
        assert needle in text, needle


def test_required_parameters():
    problems = validate_schedule({}, file="a.star", line=1)[1]
    assert problems == ["schedule: name is required", 'schedule: cron is required (e.g. cron = "0 3 * * *")',
                        "schedule: run is required (a top-level function)"]


@pytest.mark.parametrize("name", ["", "has space", "slash/y", 5, "ü"])
def test_bad_names(name):
    problems = bad(name=name)
    assert len(problems) == 1 and "name must be a non-empty string" in problems[0]
    assert problems[0].startswith("schedule")


def test_run_targets():
    assert bad(run=BadTarget('got the string "backup"')) == [
        'schedule "nightly": run must be a top-level function: got the string "backup"']
    assert "run must be a top-level function" in bad(run="backup")[0]
    assert "run must be a top-level function" in bad(run="//a.star:not-an-identifier")[0]
    assert ok(run="sub/file.star:main").run == "sub/file.star:main"


def test_args_need_string_keys_and_json_values():
    assert "args keys must be strings" in bad(args={1: "x"})[0]
    assert "JSON values" in bad(args={"x": object()})[0]
    assert ok(args={"n": [1, {"a": None}]}).args == {"n": [1, {"a": None}]}


def test_unknown_parameter_suggests_the_close_one():
    assert 'did you mean "timezone"?' in bad(timzone="UTC")[0]


def test_seven_fields_are_refused():
    assert "expected 5 fields" in bad(cron="0 0 1 1 * 0 2030")[0]


def test_booleans_are_not_numbers():
    assert "max_catchup" in bad(max_catchup=True)[0]
    assert "jitter" in bad(jitter=True)[0]


def test_fingerprint_tracks_what_decides_firing():
    base = ok()
    assert base.fingerprint() == ok().fingerprint()
    assert base.fingerprint() == ok(cron="0  3 * * *").fingerprint()
    assert ok(cron="@daily").fingerprint() == ok(cron="0 0 * * *").fingerprint()
    assert ok(cron="0 4 * * *").fingerprint() != base.fingerprint()
    assert ok(timezone="Europe/Berlin").fingerprint() != base.fingerprint()
    assert ok(enabled=False).fingerprint() != base.fingerprint()
    # what runs and how is not a change of firing: the schedule is not reset
    assert ok(args={"a": 1}, overlap="allow", jitter="1m", run="//x.star:y").fingerprint() == base.fingerprint()


def test_spec_is_frozen_and_serialisable():
    spec = ok(args={"a": 1})
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.cron = "x"
    assert spec.to_dict()["args"] == {"a": 1}
    assert hash(spec) == hash(ok(args={"a": 1}))
