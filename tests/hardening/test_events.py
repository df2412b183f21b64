"""User events behind a slow event handler: a client cannot queue unbounded work.

Events of one connection go upstream one at a time (spec 5.8); past
``limits.max_pending_events`` waiting, a PubSub client's event is acked ``Throttled`` (not
executed, its ackId free for a retry) and a simple client, which has no acks, is closed
with 1013.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import ACCESS_KEY
from tests.hardening.support import Census, assert_no_leaks
from tests.server.helpers import connect_json, connect_raw
from tests.upstream_app import Reply, UpstreamApp
from webpubsub.core.events import EventHandlerSettings, HubSettings
from webpubsub.server.config import Limits, Settings
from webpubsub.testing import ServiceThread

HUB = "events"


@pytest.fixture
def slow_handler() -> Iterator[UpstreamApp]:
    with UpstreamApp() as app:
        app.rules["work"] = Reply(204, delay=0.3)
        app.rules["message"] = Reply(204, delay=0.3)
        yield app


@pytest.fixture
def service(slow_handler: UpstreamApp) -> Iterator[ServiceThread]:
    settings = Settings(
        port=0,
        access_keys=[ACCESS_KEY],
        limits=Limits(max_pending_events=3, upstream_timeout=5),
        hubs={"*": HubSettings((EventHandlerSettings(slow_handler.url_template),))},
    )
    with ServiceThread(settings) as running:
        yield running


def event(ack_id: int) -> dict[str, object]:
    return {"type": "event", "event": "work", "ackId": ack_id, "dataType": "text", "data": "x"}


async def test_events_past_the_limit_are_throttled(
    service: ServiceThread, slow_handler: UpstreamApp
) -> None:
    baseline = Census.take(service)
    client = await connect_json(service, HUB)
    for ack_id in range(1, 7):
        await client.send(event(ack_id))
    refused = [await client.ack(ack_id) for ack_id in (4, 5, 6)]
    for ack in refused:
        assert ack["error"]["name"] == "Throttled", ack
    done = [await client.ack(ack_id) for ack_id in (1, 2, 3)]
    assert all(ack["success"] for ack in done), done
    # The queue has drained: the same ackId goes through now (it was never recorded).
    await client.send(event(4))
    assert (await client.ack(4))["success"]
    assert len(slow_handler.events("work")) == 4
    await client.close()
    assert_no_leaks(service, baseline, fds=False)  # the handler client pools connections


async def test_simple_client_flooding_a_slow_handler_is_closed(service: ServiceThread) -> None:
    baseline = Census.take(service)
    ws = await connect_raw(service, HUB)
    for i in range(10):
        await ws.send(json.dumps({"n": i}))
    with pytest.raises(ConnectionClosed):
        while True:
            await ws.recv()
    assert ws.close_code == 1013
    assert_no_leaks(service, baseline, fds=False)  # the handler client pools connections
