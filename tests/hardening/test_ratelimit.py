"""The message-rate bucket of one connection (``core/ratelimit.py``), with time passed in."""

from __future__ import annotations

import pytest

from webpubsub.core.ratelimit import MessageRate, Verdict

ALLOW, THROTTLE, CUT = Verdict.ALLOW, Verdict.THROTTLE, Verdict.CUT


def test_a_burst_then_the_rate() -> None:
    rate = MessageRate(rate=10, burst=3, now=0.0)
    assert [rate.take(0.0) for _ in range(4)] == [ALLOW, ALLOW, ALLOW, THROTTLE]
    assert rate.take(0.05) is THROTTLE  # half a token
    assert rate.take(0.1) is ALLOW  # one token refilled
    assert rate.take(10.0) is ALLOW  # refills up to the burst, no further
    assert rate.tokens == pytest.approx(2.0)


def test_a_client_that_ignores_throttling_is_cut() -> None:
    rate = MessageRate(rate=1, burst=2, now=0.0)
    verdicts = [rate.take(0.0) for _ in range(6)]
    assert verdicts == [ALLOW, ALLOW, THROTTLE, THROTTLE, CUT, CUT]


def test_a_client_that_backs_off_is_never_cut() -> None:
    rate = MessageRate(rate=2, burst=2, now=0.0)
    now = 0.0
    for _ in range(100):  # throttled once, then waits the rate out, forever
        rate.take(now)
        rate.take(now)
        assert rate.take(now) is THROTTLE
        now += 1.0
    assert rate.take(now) is ALLOW


def test_time_going_backwards_refills_nothing() -> None:
    rate = MessageRate(rate=100, burst=1, now=5.0)
    assert rate.take(5.0) is ALLOW
    assert rate.take(4.0) is THROTTLE


@pytest.mark.parametrize(("per_second", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_invalid_settings(per_second: float, burst: int) -> None:
    with pytest.raises(ValueError):
        MessageRate(per_second, burst, 0.0)
