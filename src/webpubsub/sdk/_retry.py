"""When and how long to wait before trying a call again.

The policy is pure: the clients ask it for a delay after each failed attempt and do the
waiting themselves (``time.sleep`` or ``asyncio.sleep``), so sync and async share one rule.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["RetryPolicy"]

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff for throttling, server errors and broken connections.

    A call is tried again when the service answers one of ``retry_on_status`` or the
    connection fails, up to ``max_retries`` more times. The wait before retry *n* (1-based)
    is ``backoff_factor * 2 ** (n - 1)`` seconds, capped at ``backoff_max``, with +-``jitter``
    randomness; a ``Retry-After`` (or ``retry-after-ms`` / ``x-ms-retry-after-ms``) header
    replaces that computed wait. Every operation of the API is idempotent or a send, so all
    calls are retried; set ``retry_sends=False`` to never repeat a send that may have reached
    the service (a failure to connect is still retried: nothing was sent).

    Pass ``retry=False`` (or :meth:`disabled`) to a client to switch retries off.

    Attributes:
        max_retries: retries after the first attempt (0 = no retry).
        backoff_factor: seconds of the first wait.
        backoff_max: longest computed wait.
        retry_on_status: statuses worth another attempt.
        retry_on_connection_errors: retry when the service cannot be reached or the
            connection breaks.
        retry_sends: retry ``send_*`` calls after they may have reached the service.
        max_retry_after: longest ``Retry-After`` honoured; a longer one ends the retries.
        jitter: relative randomness of the computed wait (0.2 = +-20%).
    """

    max_retries: int = 3
    backoff_factor: float = 0.8
    backoff_max: float = 60.0
    retry_on_status: frozenset[int] = field(default=RETRY_STATUSES)
    retry_on_connection_errors: bool = True
    retry_sends: bool = True
    max_retry_after: float = 60.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.backoff_factor < 0 or self.backoff_max < 0 or self.max_retry_after < 0:
            raise ValueError("backoff_factor, backoff_max and max_retry_after must be >= 0")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    @classmethod
    def disabled(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_retries=0)

    def backoff(self, retry: int) -> float:
        """The computed wait, in seconds, before retry number ``retry`` (1-based)."""
        base: float = min(self.backoff_max, self.backoff_factor * 2.0 ** max(retry - 1, 0))
        if self.jitter:
            base *= random.uniform(1 - self.jitter, 1 + self.jitter)
        return max(0.0, min(base, self.backoff_max))

    def delay_after_status(
        self, retry: int, status: int, headers: Mapping[str, str], *, is_send: bool = False
    ) -> float | None:
        """How long to wait before retry ``retry`` after an error status, or None to stop.

        Args:
            retry: the number of the retry about to happen (1 for the first retry).
            status: the status of the failed attempt.
            headers: its response headers (for ``Retry-After``).
            is_send: whether the call is a ``send_*``.

        Returns:
            Seconds to wait, or None when the call must not be retried.
        """
        if retry > self.max_retries or status not in self.retry_on_status:
            return None
        if is_send and not self.retry_sends:
            return None
        retry_after = parse_retry_after(headers)
        if retry_after is None:
            return self.backoff(retry)
        if retry_after > self.max_retry_after:
            return None
        return retry_after

    def delay_after_error(self, retry: int, *, sent: bool, is_send: bool = False) -> float | None:
        """How long to wait before retry ``retry`` after a connection failure, or None.

        Args:
            retry: the number of the retry about to happen (1 for the first retry).
            sent: whether the request may have reached the service.
            is_send: whether the call is a ``send_*``.

        Returns:
            Seconds to wait, or None when the call must not be retried.
        """
        if retry > self.max_retries or not self.retry_on_connection_errors:
            return None
        if sent and is_send and not self.retry_sends:
            return None
        return self.backoff(retry)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds asked for by ``retry-after-ms``, ``x-ms-retry-after-ms`` or ``Retry-After``.

    ``Retry-After`` may be delta-seconds or an HTTP date (RFC 9110 10.2.3).
    """
    headers = {name.lower(): value for name, value in headers.items()}
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        value = headers.get(name)
        if value is not None:
            try:
                return max(0.0, float(value) / 1000)
            except ValueError:
                continue
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)
