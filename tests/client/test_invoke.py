"""``WebPubSubClient.invoke_event`` (spec-next 1) against the service and an event handler."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from tests.client.conftest import Connect
from tests.client.helpers import PROTOCOLS
from tests.upstream_app import Reply, UpstreamApp
from webpubsub.client import InvocationError, InvokeResult
from webpubsub.core.events import EventHandlerSettings, HubSettings
from webpubsub.testing import ServiceThread


@pytest.fixture
def app(service: ServiceThread, hub: str) -> Iterator[UpstreamApp]:
    with UpstreamApp() as running:
        handler = EventHandlerSettings(running.url_template, user_event_pattern="ask,slow,bad")
        settings = HubSettings((handler,))
        service.call(lambda: service.settings.hubs.__setitem__(hub.lower(), settings))
        yield running


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_answers_come_back_typed(connect: Connect, app: UpstreamApp, protocol: str) -> None:
    client = await connect(protocol=protocol)
    app.rules["ask"] = Reply(
        200,
        b'{"total":3}',
        {"Content-Type": "application/json", "X-WebPubSub-Metadata-Trace": "t1"},
    )
    result = await client.invoke_event("ask", {"order": 1}, "json", metadata={"Req": "r"})
    assert isinstance(result, InvokeResult)
    assert (result.data, result.data_type, result.metadata) == (
        {"total": 3},
        "json",
        {"trace": "t1"},
    )
    [request] = app.events("ask")
    assert request.body == b'{"order":1}'
    assert request.headers["x-webpubsub-metadata-req"] == "r"
    app.rules["ask"] = Reply(200, b"\x00\x01", {"Content-Type": "application/octet-stream"})
    binary = await client.invoke_event("ask", "hi", "text")
    assert (binary.data, binary.data_type) == (b"\x00\x01", "binary")
    app.rules["ask"] = Reply(204)
    empty = await client.invoke_event("ask")
    assert (empty.data, empty.data_type) == (None, None)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_errors_are_invocation_errors(
    connect: Connect, app: UpstreamApp, protocol: str
) -> None:
    client = await connect(protocol=protocol)
    app.rules["bad"] = Reply(400, b"no such order")
    with pytest.raises(InvocationError) as failed:
        await client.invoke_event("bad", "x", "text")
    assert (failed.value.name, failed.value.message) == ("BadRequest", "no such order")
    with pytest.raises(InvocationError) as missing:
        await client.invoke_event("nobody")
    assert missing.value.name == "NotFound"


async def test_a_timeout_cancels_the_call(connect: Connect, app: UpstreamApp) -> None:
    client = await connect()
    released = threading.Event()
    app.rules["slow"] = Reply(200, b"late", {"Content-Type": "text/plain"}, hold=released)
    try:
        with pytest.raises(InvocationError) as timed_out:
            await client.invoke_event("slow", timeout=0.3)
        assert timed_out.value.name == "Timeout"
    finally:
        released.set()
    # The connection goes on: the late answer (if any) is dropped, a new call works.
    app.rules["ask"] = Reply(200, b"ok", {"Content-Type": "text/plain"})
    assert (await client.invoke_event("ask")).data == "ok"
