"""Retries: the pure policy, then both clients against a scripted server (503 then 202, ...)."""

from __future__ import annotations

import time
from typing import Any

import pytest

import webpubsub
from webpubsub import HttpResponseError, RawResponse, RetryPolicy, ServiceRequestError
from webpubsub.sdk._retry import RETRY_STATUSES, parse_retry_after

from ..conftest import ACCESS_KEY
from .helpers import Recorder, Reply, free_port

pytestmark = pytest.mark.timeout(30)

FAST = RetryPolicy(max_retries=3, backoff_factor=0.001, backoff_max=0.01)


def connection_string(recorder: Recorder) -> str:
    return f"Endpoint={recorder.endpoint};AccessKey={ACCESS_KEY};Version=1.0;"


# -- the policy ---------------------------------------------------------------------------


class TestPolicy:
    """Pure decisions: which failures are retried and how long to wait."""

    def test_exponential_backoff_capped(self) -> None:
        policy = RetryPolicy(backoff_factor=0.5, backoff_max=3, jitter=0)
        assert [policy.backoff(n) for n in range(1, 6)] == [0.5, 1, 2, 3, 3]

    def test_jitter_stays_in_bounds(self) -> None:
        policy = RetryPolicy(backoff_factor=1, jitter=0.2)
        for _ in range(100):
            assert 0.8 <= policy.backoff(1) <= 1.2

    def test_statuses(self) -> None:
        policy = RetryPolicy(jitter=0)
        assert {408, 429, 500, 502, 503, 504} == RETRY_STATUSES
        for status in RETRY_STATUSES:
            assert policy.delay_after_status(1, status, {}) == policy.backoff_factor
        for status in (400, 401, 403, 404, 409, 413, 415, 501):
            assert policy.delay_after_status(1, status, {}) is None
        assert policy.delay_after_status(4, 503, {}) is None  # max_retries=3

    def test_retry_after_replaces_backoff(self) -> None:
        policy = RetryPolicy(max_retry_after=10)
        assert policy.delay_after_status(1, 429, {"Retry-After": "2"}) == 2
        assert policy.delay_after_status(1, 503, {"retry-after-ms": "250"}) == 0.25
        assert policy.delay_after_status(1, 503, {"x-ms-retry-after-ms": "5"}) == 0.005
        assert policy.delay_after_status(1, 503, {"Retry-After": "3600"}) is None  # too long

    def test_retry_after_http_date(self) -> None:
        headers = {"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"}
        assert parse_retry_after(headers, now=1445412480.0) == 10.0
        assert parse_retry_after({"Retry-After": "soon"}) is None

    def test_sends_and_connection_errors(self) -> None:
        policy = RetryPolicy(retry_sends=False, jitter=0)
        assert policy.delay_after_status(1, 503, {}, is_send=True) is None
        assert policy.delay_after_status(1, 503, {}, is_send=False) is not None
        # Nothing was sent when the connection could not be made: always safe.
        assert policy.delay_after_error(1, sent=False, is_send=True) is not None
        assert policy.delay_after_error(1, sent=True, is_send=True) is None
        assert (
            RetryPolicy(retry_on_connection_errors=False).delay_after_error(1, sent=False) is None
        )

    def test_disabled_and_validation(self) -> None:
        assert RetryPolicy.disabled().delay_after_status(1, 503, {}) is None
        with pytest.raises(ValueError):
            RetryPolicy(max_retries=-1)
        with pytest.raises(ValueError):
            RetryPolicy(jitter=1.5)


# -- against a scripted server ------------------------------------------------------------


async def test_503_then_202(make_client: Any, recorder: Recorder) -> None:
    recorder.script = [Reply(503), Reply(202)]
    seen: list[RawResponse] = []
    client = make_client(connection_string(recorder), hub="chat", retry=FAST)
    await client.send_to_all({"hello": "world"}, on_response=seen.append)
    assert [r.method for r in recorder.requests] == ["POST", "POST"]
    assert recorder.requests[0].body == recorder.requests[1].body == b'{"hello":"world"}'
    # Each attempt is signed anew (fresh client request id too).
    ids = {r.headers["x-ms-client-request-id"] for r in recorder.requests}
    assert len(ids) == 2
    assert [r.status_code for r in seen] == [202]  # on_response sees the final answer


async def test_every_retryable_status(make_client: Any, recorder: Recorder) -> None:
    recorder.script = [Reply(s) for s in (408, 429, 500)] + [Reply(200)]
    client = make_client(connection_string(recorder), hub="chat", retry=FAST)
    await client.group("g").add_connection("c1")
    assert len(recorder.requests) == 4


async def test_retry_after_is_honoured(make_client: Any, recorder: Recorder) -> None:
    recorder.script = [Reply(429, {"retry-after-ms": "150"}), Reply(202)]
    client = make_client(connection_string(recorder), hub="chat", retry=FAST)
    started = time.monotonic()
    await client.send_to_all("x")
    assert time.monotonic() - started >= 0.15
    assert len(recorder.requests) == 2


async def test_gives_up_after_max_retries(make_client: Any, recorder: Recorder) -> None:
    recorder.script = [Reply(503, {"x-ms-error-code": "Error.Busy"}) for _ in range(5)]
    policy = RetryPolicy(max_retries=2, backoff_factor=0.001)
    client = make_client(connection_string(recorder), hub="chat", retry=policy)
    with pytest.raises(HttpResponseError) as info:
        await client.send_to_all("x")
    assert info.value.status_code == 503 and info.value.error_code == "Error.Busy"
    assert len(recorder.requests) == 3


async def test_off_switch(make_client: Any, recorder: Recorder) -> None:
    recorder.script = [Reply(503), Reply(202)]
    client = make_client(connection_string(recorder), hub="chat", retry=False)
    with pytest.raises(HttpResponseError):
        await client.send_to_all("x")
    assert len(recorder.requests) == 1


async def test_not_retried_statuses(make_client: Any, recorder: Recorder) -> None:
    recorder.script = [Reply(400, {"Content-Type": "application/json"}, b'{"code":"Bad"}')]
    client = make_client(connection_string(recorder), hub="chat", retry=FAST)
    with pytest.raises(HttpResponseError) as info:
        await client.send_to_all("x")
    assert info.value.error_code == "Bad"
    assert len(recorder.requests) == 1


async def test_dropped_connection_is_retried(make_client: Any, recorder: Recorder) -> None:
    recorder.script = [Reply(drop=True), Reply(202)]
    client = make_client(connection_string(recorder), hub="chat", retry=FAST)
    await client.send_to_all("x")
    assert len(recorder.requests) == 2


async def test_dropped_send_not_retried_without_retry_sends(
    make_client: Any, recorder: Recorder
) -> None:
    recorder.script = [Reply(drop=True), Reply(202)]
    policy = RetryPolicy(backoff_factor=0.001, retry_sends=False)
    client = make_client(connection_string(recorder), hub="chat", retry=policy)
    with pytest.raises(webpubsub.ServiceResponseError):
        await client.send_to_all("x")
    assert len(recorder.requests) == 1
    recorder.script = [Reply(drop=True), Reply(200)]
    await client.group("g").add_connection("c")  # not a send: retried
    assert len(recorder.requests) == 3


async def test_unreachable_service(make_client: Any, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    policy = RetryPolicy(max_retries=2, backoff_factor=0.001)
    client = make_client(
        f"Endpoint=http://127.0.0.1:{port};AccessKey={ACCESS_KEY}", hub="chat", retry=policy
    )
    caplog.set_level("INFO", logger="webpubsub.sdk")
    with pytest.raises(ServiceRequestError) as info:
        await client.send_to_all("x")
    assert isinstance(info.value, webpubsub.WebPubSubError)
    assert isinstance(info.value.__cause__, Exception)  # the httpx error, kept for debugging
    retries = [r for r in caplog.records if r.getMessage().startswith("retrying send_to_all")]
    assert len(retries) == 2
