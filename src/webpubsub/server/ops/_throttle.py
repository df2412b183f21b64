"""Slow down guessing: failed Live Trace sign-ins per client address, in a sliding window.

A Live Trace token is signed with an access key, so a wrong one costs the guesser nothing
but a request. After ``limit`` failures from one address within ``window`` seconds, that
address gets 429 with ``Retry-After`` until its oldest failure leaves the window; a right
credential is refused too meanwhile (otherwise the throttle would not slow anyone down).

The rule is pure: callers pass the time in, so tests step through windows without sleeping.
"""

from __future__ import annotations

import math
from collections import deque

LOGIN_FAILURE_LIMIT = 10
"""Failed sign-ins from one address allowed within the window."""
LOGIN_FAILURE_WINDOW = 60.0
"""Seconds a failed sign-in counts against its address."""
MAX_TRACKED_ADDRESSES = 10_000
"""Addresses remembered at once; the one idle longest is forgotten past this."""


def client_address(peer: str) -> str:
    """The address part of ``host:port`` (IPv6 too): every port of a client counts as one."""
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() else peer


class LoginThrottle:
    """Counts failed sign-ins per address and says when an address must wait.

    Args:
        limit: failures allowed within ``window``; the next attempt is refused.
        window: seconds a failure counts.
        max_addresses: bound on the addresses remembered (memory stays bounded under a
            spray of addresses).
    """

    def __init__(
        self,
        limit: int = LOGIN_FAILURE_LIMIT,
        window: float = LOGIN_FAILURE_WINDOW,
        max_addresses: int = MAX_TRACKED_ADDRESSES,
    ) -> None:
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, address: str, now: float) -> int | None:
        """Whole seconds ``address`` must wait before trying again, or None if it may now."""
        failures = self._recent(address, now)
        if failures is None or len(failures) < self.limit:
            return None
        return max(1, math.ceil(failures[0] + self.window - now))

    def failed(self, address: str, now: float) -> None:
        """Count a failed sign-in from ``address`` at ``now``."""
        failures = self._recent(address, now)
        if failures is None:
            failures = deque(maxlen=self.limit)
        else:
            del self._failures[address]  # re-insert: the dict stays ordered by last failure
        failures.append(now)
        self._failures[address] = failures
        while len(self._failures) > self.max_addresses:
            del self._failures[next(iter(self._failures))]

    def succeeded(self, address: str) -> None:
        """Forget the failures of an address that just proved a key."""
        self._failures.pop(address, None)

    def _recent(self, address: str, now: float) -> deque[float] | None:
        """The failures of ``address`` still inside the window (older ones dropped)."""
        failures = self._failures.get(address)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures

    def __len__(self) -> int:
        return len(self._failures)
