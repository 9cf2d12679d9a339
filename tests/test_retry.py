"""The retry policy: pure, deterministic decisions and delays."""

import pytest

from flowmetal import retry
from flowmetal.engine.effects import http, sh
from flowmetal.retry import RetryPolicy, delay, should_retry

NO_JITTER = RetryPolicy(jitter=False)


def test_defaults():
    p = RetryPolicy()
    assert (p.attempts, p.initial, p.backoff, p.max_delay, p.jitter, p.retry_on) == (3, 1.0, 2.0, 300.0, True, None)
    assert RetryPolicy.from_args(None) == p
    assert RetryPolicy.from_args({}) == p


def test_from_args_parses_durations_and_round_trips():
    p = RetryPolicy.from_args(
        {"attempts": 5, "initial": "500ms", "backoff": 3, "max_delay": "1m", "jitter": False, "retry_on": ["5xx", "exit:2"]}
    )
    assert p == RetryPolicy(attempts=5, initial=0.5, backoff=3.0, max_delay=60.0, jitter=False, retry_on=("5xx", "exit:2"))
    assert RetryPolicy.from_args(p.to_dict()) == p
    assert RetryPolicy.from_args({"attempts": None, "initial": None}) == RetryPolicy()


@pytest.mark.parametrize("args, message", [
    ({"attempts": 0}, "attempts must be an integer >= 1"),
    ({"attempts": 2.5}, "attempts must be an integer >= 1"),
    ({"attempts": True}, "attempts must be an integer >= 1"),
    ({"backoff": 0.5}, "backoff must be a number >= 1"),
    ({"backoff": "2"}, "backoff must be a number >= 1"),
    ({"initial": "soon"}, "retry_policy: initial must be"),
    ({"max_delay": -1}, "retry_policy: max_delay must not be negative"),
    ({"jitter": "yes"}, "jitter must be True or False"),
    ({"retry_on": "5xx"}, "retry_on must be a list"),
    ({"retry_on": [5]}, "retry_on must be a list of strings"),
    ({"retry_on": ["5xx", "flaky"]}, "unknown outcome 'flaky' in retry_on; known: nonzero, timeout"),
    ({"retry_on": ["status:42"]}, "unknown outcome 'status:42'"),
    ({"retry_on": ["exit:-1"]}, "unknown outcome 'exit:-1'"),
    ({"retry_on": ["cancelled"]}, "unknown outcome 'cancelled'"),
    ({"attempt": 3}, "unknown argument 'attempt'"),
    ("3 times", "retry must be a retry_policy"),
])
def test_from_args_validation(args, message):
    with pytest.raises(ValueError, match=message):
        RetryPolicy.from_args(args)


def test_every_default_and_produced_outcome_is_accepted_in_retry_on():
    produced = ["nonzero", "exit:3", "timeout", "signal", "signal:SIGKILL", "connection",
                "status:503", "5xx", "status:429", "429", "status:404", "4xx"]
    assert retry.check_retry_on(produced + sh.RETRY_ON + http.RETRY_ON)


def test_exponential_delays_without_jitter():
    assert [delay(NO_JITTER, n, "k") for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    p = RetryPolicy(initial=0.5, backoff=3.0, jitter=False)
    assert [delay(p, n, "k") for n in (1, 2, 3)] == [0.5, 1.5, 4.5]
    assert delay(RetryPolicy(backoff=1.0, initial=5, jitter=False), 10, "k") == 5.0


def test_delay_is_capped_at_max_delay():
    p = RetryPolicy(initial=10, max_delay=60, jitter=False)
    assert [delay(p, n, "k") for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]
    assert delay(p, 5000, "k") == 60  # no overflow


def test_jitter_is_stable_per_key_and_attempt_and_within_bounds():
    p = RetryPolicy(initial=10, max_delay=1000)
    unjittered = RetryPolicy(initial=10, max_delay=1000, jitter=False)
    for attempt in (1, 2, 3):
        base = delay(unjittered, attempt, "run1:4")
        d = delay(p, attempt, "run1:4")
        assert d == delay(p, attempt, "run1:4")  # the same on replay
        assert 0.5 * base <= d <= base
    spread = {delay(p, 1, f"run1:{seq}") for seq in range(50)}
    assert len(spread) == 50  # different effects do not retry in lockstep
    assert min(spread) < 6.5 and max(spread) > 8.5


def test_jitter_formula_is_pinned():
    # replays recompute delays from this formula: these values must never change
    assert retry.jitter_factor("01HZX:3", 1) == pytest.approx(0.9347503809053277, abs=1e-12)
    assert retry.jitter_factor("01HZX:3", 2) == pytest.approx(0.7674680423435905, abs=1e-12)
    assert delay(RetryPolicy(), 2, "01HZX:3") == pytest.approx(2 * 0.7674680423435905)


def test_retry_after_is_a_floor_capped_at_max_delay():
    assert delay(NO_JITTER, 1, "k", retry_after=7) == 7.0
    assert delay(NO_JITTER, 4, "k", retry_after=2) == 8.0
    assert delay(RetryPolicy(max_delay=60, jitter=False), 1, "k", retry_after=3600) == 60.0
    assert delay(RetryPolicy(), 1, "k", retry_after=30) == 30.0  # not jittered below the server's ask


def test_delay_rejects_attempt_zero():
    with pytest.raises(ValueError):
        delay(RetryPolicy(), 0, "k")


def test_should_retry_with_effect_defaults():
    p = RetryPolicy()
    assert should_retry(p, ["nonzero", "exit:1"], sh.RETRY_ON)
    assert should_retry(p, ["timeout"], sh.RETRY_ON)
    assert should_retry(p, ["signal", "signal:SIGKILL"], sh.RETRY_ON)
    assert should_retry(p, ["status:503", "5xx"], http.RETRY_ON)
    assert should_retry(p, ["status:429", "429", "4xx"], http.RETRY_ON)
    assert should_retry(p, ["connection"], http.RETRY_ON)
    assert not should_retry(p, ["status:404", "4xx"], http.RETRY_ON)
    assert not should_retry(p, [], http.RETRY_ON)
    assert not should_retry(p, ["cancelled"], sh.RETRY_ON)


def test_should_retry_with_custom_retry_on():
    p = RetryPolicy.from_args({"retry_on": ["exit:75", "status:404"]})
    assert should_retry(p, ["nonzero", "exit:75"], sh.RETRY_ON)
    assert not should_retry(p, ["nonzero", "exit:1"], sh.RETRY_ON)
    assert should_retry(p, ["status:404", "4xx"], http.RETRY_ON)
    assert not should_retry(p, ["status:503", "5xx"], http.RETRY_ON)
    never = RetryPolicy.from_args({"retry_on": []})
    assert not should_retry(never, ["timeout"], sh.RETRY_ON)


def test_should_retry_stops_when_attempts_are_used_up():
    p = RetryPolicy(attempts=3)
    assert should_retry(p, ["timeout"], sh.RETRY_ON, attempt=1)
    assert should_retry(p, ["timeout"], sh.RETRY_ON, attempt=2)
    assert not should_retry(p, ["timeout"], sh.RETRY_ON, attempt=3)
    assert not should_retry(RetryPolicy(attempts=1), ["timeout"], sh.RETRY_ON, attempt=1)


def test_outcomes_of_real_results_feed_should_retry():
    failed = sh.perform({"cmd": "exit 75"}, _ctx())
    p = RetryPolicy.from_args({"retry_on": ["exit:75"]})
    assert should_retry(p, sh.outcomes(failed), sh.RETRY_ON)
    assert not should_retry(p, sh.outcomes(sh.perform({"cmd": "true"}, _ctx())), sh.RETRY_ON)


def _ctx():
    from flowmetal.engine.effects import EffectContext

    return EffectContext(run_id="r", seq=1)
