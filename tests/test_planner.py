"""Planner: which fire times start, which are missed and why; overlap decisions."""

from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from flowmetal.schedule.cron import fires_between
from flowmetal.schedule.planner import Fire, overlap_decision, plan_fires
from flowmetal.schedule.spec import validate_schedule

UTC = timezone.utc
T0 = datetime(2026, 5, 1, tzinfo=UTC)  # last recorded fire of an hourly job
DOWN = T0 + timedelta(hours=72, minutes=30)  # the daemon comes back 3 days later


def spec(**kwargs):
    base = {"name": "hourly", "cron": "0 * * * *", "run": "//jobs.star:job"}
    base.update(kwargs)
    made, problems = validate_schedule(base, file="jobs.star", line=1)
    assert problems == []
    return made


def tally(plan):
    return Counter((f.action, f.reason) for f in plan)


def starts(plan):
    return [f.nominal for f in plan if f.action == "start"]


def hours(n):
    return T0 + timedelta(hours=n)


def test_three_days_down_catchup_none():
    plan = plan_fires(spec(catchup="none"), T0, T0 - timedelta(days=30), DOWN)
    assert [f.nominal for f in plan] == [hours(n) for n in range(1, 73)]
    assert tally(plan) == {("miss", "catchup=none"): 72}


def test_three_days_down_catchup_latest():
    plan = plan_fires(spec(catchup="latest"), T0, T0 - timedelta(days=30), DOWN)
    assert starts(plan) == [hours(72)]
    assert plan[-1] == Fire(hours(72), "start", "catch-up")
    assert tally(plan) == {("start", "catch-up"): 1, ("miss", "superseded by a later fire"): 71}


def test_three_days_down_catchup_all_within_a_day():
    plan = plan_fires(spec(catchup="all", catchup_window="1d"), T0, T0 - timedelta(days=30), DOWN)
    assert starts(plan) == [hours(n) for n in range(49, 73)]  # the last 24, oldest first
    assert tally(plan) == {("start", "catch-up"): 24, ("miss", "outside the catch-up window"): 48}
    assert [f.nominal for f in plan] == sorted(f.nominal for f in plan)


def test_max_catchup_keeps_the_newest():
    plan = plan_fires(spec(catchup="all", max_catchup=10), T0, T0 - timedelta(days=30), DOWN)
    assert starts(plan) == [hours(n) for n in range(63, 73)]
    assert tally(plan) == {("start", "catch-up"): 10, ("miss", "max_catchup exceeded"): 62}


def test_window_is_checked_before_max_catchup():
    plan = plan_fires(spec(catchup="all", catchup_window="5h", max_catchup=3), T0, T0 - timedelta(days=30), DOWN)
    assert starts(plan) == [hours(70), hours(71), hours(72)]
    assert tally(plan) == {("start", "catch-up"): 3, ("miss", "max_catchup exceeded"): 2,
                           ("miss", "outside the catch-up window"): 67}


def test_latest_respects_the_window_too():
    plan = plan_fires(spec(catchup="latest", catchup_window="10m"), T0, T0 - timedelta(days=30), DOWN)
    assert starts(plan) == []
    assert tally(plan) == {("miss", "outside the catch-up window"): 72}


def test_added_after_todays_fire_time_does_not_start_it():
    daily = spec(cron="0 10 * * *", catchup="all")
    added = datetime(2026, 5, 1, 10, 30, tzinfo=UTC)
    assert plan_fires(daily, None, added, added + timedelta(minutes=1)) == []
    assert plan_fires(daily, None, added, added + timedelta(hours=12)) == []
    tomorrow = datetime(2026, 5, 2, 10, 0, 5, tzinfo=UTC)
    assert plan_fires(daily, None, added, tomorrow) == [Fire(datetime(2026, 5, 2, 10, tzinfo=UTC), "start", None)]


def test_fires_before_an_edit_are_never_listed():
    # last recorded fire at hour -1; edited at hour 0:30 (so the hour-0 fire is before the edit)
    edited = hours(0) + timedelta(minutes=30)
    plan = plan_fires(spec(catchup="all"), hours(-1), edited, hours(3) + timedelta(seconds=10))
    assert plan == [Fire(hours(1), "start", "catch-up"), Fire(hours(2), "start", "catch-up"),
                    Fire(hours(3), "start", None)]


def test_a_fire_exactly_at_since_counts():
    plan = plan_fires(spec(), None, hours(1), hours(1) + timedelta(seconds=2))
    assert plan == [Fire(hours(1), "start", None)]


def test_on_time_grace():
    s = spec(catchup="none")
    assert plan_fires(s, hours(0), hours(-10), hours(1) + timedelta(seconds=59)) == [Fire(hours(1), "start", None)]
    assert plan_fires(s, hours(0), hours(-10), hours(1) + timedelta(seconds=61)) == [Fire(hours(1), "miss", "catchup=none")]
    assert plan_fires(s, hours(0), hours(-10), hours(1) + timedelta(seconds=61), grace=120) == [
        Fire(hours(1), "start", None)]


def test_on_time_fire_supersedes_missed_ones_under_latest():
    plan = plan_fires(spec(catchup="latest"), hours(0), hours(-10), hours(3) + timedelta(seconds=5))
    assert plan == [Fire(hours(1), "miss", "superseded by a later fire"),
                    Fire(hours(2), "miss", "superseded by a later fire"),
                    Fire(hours(3), "start", None)]


def test_on_time_fire_does_not_count_against_max_catchup():
    plan = plan_fires(spec(catchup="all", max_catchup=2), hours(0), hours(-10), hours(5))
    assert [(f.nominal, f.action, f.reason) for f in plan] == [
        (hours(1), "miss", "max_catchup exceeded"), (hours(2), "miss", "max_catchup exceeded"),
        (hours(3), "start", "catch-up"), (hours(4), "start", "catch-up"), (hours(5), "start", None)]


def test_disabled_schedule_records_misses():
    plan = plan_fires(spec(enabled=False), hours(0), hours(-10), hours(3))
    assert plan == [Fire(hours(n), "miss", "disabled") for n in (1, 2, 3)]


def test_nothing_to_do():
    s = spec()
    assert plan_fires(s, hours(1), hours(-10), hours(1) + timedelta(minutes=59)) == []
    assert plan_fires(s, hours(5), hours(-10), hours(3)) == []  # clock went backwards
    assert plan_fires(s, None, hours(4), hours(3)) == []


def covered(plan):
    """Expand summaries: (nominal, action, reason) for every fire the plan stands for."""
    out = []
    for f in plan:
        if f.through is None:
            out.append((f.nominal, f.action, f.reason))
        else:
            out.extend((n, f.action, f.reason) for n in fires_between("* * * * *", "UTC", f.nominal - timedelta(seconds=1), f.through))
    return out


@pytest.mark.parametrize("kwargs", [
    {"catchup": "none"}, {"catchup": "latest"}, {"catchup": "latest", "catchup_window": "30m"},
    {"catchup": "all", "max_catchup": 3}, {"catchup": "all", "max_catchup": 3, "catchup_window": "20m"},
    {"catchup": "all", "max_catchup": 3, "catchup_window": "100m"}, {"enabled": False},
])
def test_summaries_stand_for_exactly_the_unlisted_fires(kwargs):
    s = spec(cron="* * * * *", **kwargs)
    start, now = T0, T0 + timedelta(hours=2, seconds=30)
    full = plan_fires(s, start, start, now, list_limit=10_000)
    short = plan_fires(s, start, start, now, list_limit=5)
    assert all(f.through is None for f in full) and len(full) == 120
    assert len(short) <= 5 + 3 + 2  # listed + (for "all") max_catchup + 1 + at most two summaries
    assert any(f.through is not None for f in short)
    assert covered(short) == [(f.nominal, f.action, f.reason) for f in full]


def test_years_of_every_second_fires_stay_small_and_fast():
    s = spec(cron="* * * * * *", catchup="all", catchup_window="1h", max_catchup=100)
    now = T0 + timedelta(days=400)
    plan = plan_fires(s, T0, T0, now)
    assert len(plan) <= 1000 + 2
    assert tally(plan)[("start", "catch-up")] == 100 and tally(plan)[("start", None)] == 1
    first = plan[0]
    assert first.through is not None and first.nominal == T0 + timedelta(seconds=1)
    assert first.reason == "outside the catch-up window"
    listed = [f for f in plan if f.through is None]
    assert listed[-1].nominal == now
    summaries = [f for f in plan if f.through is not None]
    assert summaries[-1].through == listed[0].nominal - timedelta(seconds=1)


# ------------------------------------------------------------------- overlap


@pytest.mark.parametrize("policy, active, buffered, expected", [
    ("skip", 0, 0, "start"), ("skip", 1, 0, "skip"), ("skip", 3, 0, "skip"),
    ("buffer_one", 0, 0, "start"), ("buffer_one", 1, 0, "buffer"), ("buffer_one", 1, 1, "skip"),
    ("buffer_one", 0, 1, "skip"),
    ("buffer_all", 0, 0, "start"), ("buffer_all", 1, 0, "buffer"), ("buffer_all", 1, 7, "buffer"),
    ("buffer_all", 0, 2, "buffer"),
    ("allow", 0, 0, "start"), ("allow", 5, 0, "start"),
    ("cancel_other", 0, 0, "start"), ("cancel_other", 1, 0, "cancel_then_start"),
])
def test_overlap_decisions(policy, active, buffered, expected):
    assert overlap_decision(policy, active, buffered) == expected


def test_overlap_rejects_unknown_policy_and_negative_counts():
    with pytest.raises(ValueError):
        overlap_decision("sometimes", 0, 0)
    with pytest.raises(ValueError):
        overlap_decision("skip", -1, 0)
