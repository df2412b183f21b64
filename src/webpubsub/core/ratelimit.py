"""The message rate of one client connection: a token bucket, with time passed in.

A connection may send ``rate`` messages per second on average and ``burst`` at once. A
message over the rate is *throttled*: refused with the ack error ``Throttled`` (or dropped
when it has no ``ackId``), so a client that backs off loses nothing it cannot retry. A client
that keeps sending regardless, another ``burst`` messages without a single one allowed in
between, is *cut*: the node closes it with 1008 (policy violation).

No clock and no event loop here: the caller passes ``now`` (seconds, monotonic).
"""

from __future__ import annotations

from enum import Enum


class Verdict(Enum):
    """What to do with one incoming message."""

    ALLOW = "allow"
    THROTTLE = "throttle"  # refuse this one (ack Throttled), keep the connection
    CUT = "cut"  # the client ignores throttling: close it


class MessageRate:
    """A token bucket of ``burst`` tokens refilled at ``rate`` tokens per second.

    Args:
        rate: messages per second allowed on average (> 0).
        burst: messages allowed at once, and also how many refused messages in a row are
            tolerated before the verdict becomes :attr:`Verdict.CUT` (>= 1).
        now: the time the connection opened; the bucket starts full.
    """

    __slots__ = ("_refused", "_tokens", "_updated", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = now
        self._refused = 0  # refused in a row since the last allowed message

    def take(self, now: float) -> Verdict:
        """Account for one message arriving at ``now`` and say what to do with it."""
        elapsed = now - self._updated
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
            self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self._refused = 0
            return Verdict.ALLOW
        self._refused += 1
        return Verdict.CUT if self._refused > self.burst else Verdict.THROTTLE

    @property
    def tokens(self) -> float:
        """Messages that could be sent right now (as of the last :meth:`take`)."""
        return self._tokens
