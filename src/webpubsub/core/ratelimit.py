"""The message rate of one client connection: a token bucket, with time passed in.

A connection may send ``rate`` messages per second on average and ``burst`` at once. A
message over the rate is *throttled*: refused with the ack error ``Throttled`` (or dropped
when it has no ``ackId``), so a client that backs off loses nothing it cannot retry.

A client that keeps sending regardless is *cut*: the node closes it with 1008 (policy
violation) once it has sent another ``burst`` messages that were refused since it was last
back under its rate, that is since its bucket was last full again. Refusals are not forgiven
by the odd message the refill lets through: a steady flood at any speed over the rate lets
one message in every ``1/rate`` seconds, and if each of those forgave it, it would never be
cut. A client that backs off until its bucket refills (``burst / rate`` seconds without
sending, or less while it sends under the rate) starts again from zero.

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
        burst: messages allowed at once, and also how many refused messages are tolerated
            between two full buckets before the verdict becomes :attr:`Verdict.CUT` (>= 1).
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
        self._refused = 0  # refused since the bucket was last full

    def take(self, now: float) -> Verdict:
        """Account for one message arriving at ``now`` and say what to do with it."""
        elapsed = now - self._updated
        if elapsed > 0:
            tokens = self._tokens + elapsed * self.rate
            if tokens >= self.burst:
                tokens = float(self.burst)
                self._refused = 0  # back under its rate: the slate is clean
            self._tokens = tokens
            self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return Verdict.ALLOW
        self._refused += 1
        return Verdict.CUT if self._refused > self.burst else Verdict.THROTTLE

    @property
    def tokens(self) -> float:
        """Messages that could be sent right now (as of the last :meth:`take`)."""
        return self._tokens

    @property
    def refused(self) -> int:
        """Messages refused since the bucket was last full."""
        return self._refused
