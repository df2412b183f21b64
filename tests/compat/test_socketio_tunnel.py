"""The official ``@azure/web-pubsub-socket.io`` app server on our tunnel (socketio spec 4.1,
4.4, 8 check 19): ``useAzureSocketIO`` resolves, its REST calls reach clients, and it survives
a tunnel dropped by the service (it reconnects with the same ``sub``)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest

from tests.nodejs import NodeDriver, node_missing
from tests.server.helpers import async_wait_until, connect_json
from webpubsub.testing import ServiceThread

pytestmark = pytest.mark.skipif(node_missing() is not None, reason=str(node_missing()))

RECONNECT = 20.0  # the SDK's client retries after a delay of its own


@pytest.fixture
def app() -> Iterator[NodeDriver]:
    driver = NodeDriver("socketio_app.mjs")
    try:
        yield driver
    finally:
        driver.close()


def sessions(service: ServiceThread, hub: str) -> list[tuple[str, str]]:
    """(sub, tunnel connection id) of the hub's tunnels."""
    return service.call(
        lambda: [
            (s.sub, s.connection_id)
            for s in service.service.tunnels.sessions
            if s.hub == hub.lower()
        ]
    )


async def test_use_azure_socketio_connects_and_survives_a_drop(
    service: ServiceThread, hub: str, app: NodeDriver
) -> None:
    assert (
        await asyncio.to_thread(
            app.request, "start", hub=hub, connectionString=service.connection_string
        )
        == "started"
    )
    [(sub, first)] = sessions(service, hub)
    assert len(sub) == 36  # the process's GUID, from the token's sub

    # io.emit is a :send over the tunnel with the namespace filter; a JSON client in that
    # group sees the Engine.IO payload.
    async with await connect_json(service, hub, roles=["webpubsub.joinLeaveGroup"]) as client:
        assert (await client.join("0~Lw~"))["success"] is True
        await asyncio.to_thread(app.request, "emit", event="news", args=["x"])
        assert (await client.receive())["data"] == '42["news","x"]'

        def drop() -> None:
            for session in service.service.tunnels.sessions:
                if session.hub == hub.lower():
                    assert session.proto.transport is not None
                    session.proto.transport.abort()

        service.call(drop)
        await async_wait_until(
            lambda: [s for s, c in sessions(service, hub) if c != first] == [sub],
            "the SDK to reconnect with the same sub",
            timeout=RECONNECT,
        )
        await asyncio.to_thread(app.request, "emit", event="news", args=["y"])
        assert (await client.receive())["data"] == '42["news","y"]'


@pytest.mark.skipif(not os.environ.get("WEBPUBSUB_SLOW"), reason="130 s idle; WEBPUBSUB_SLOW=1")
@pytest.mark.timeout(220)
async def test_idle_tunnel_is_kept(service: ServiceThread, hub: str, app: NodeDriver) -> None:
    """Check 19, first half: the SDK's client drops a tunnel that hears nothing for 120 s;
    our ServiceStatus frames keep one idle tunnel for 130 s."""
    await asyncio.to_thread(
        app.request, "start", hub=hub, connectionString=service.connection_string
    )
    [first] = sessions(service, hub)
    deadline = time.monotonic() + 130
    while time.monotonic() < deadline:
        assert sessions(service, hub) == [first], "the tunnel was replaced"
        await asyncio.sleep(1)  # polling the state, not timing an effect
    async with await connect_json(service, hub, roles=["webpubsub.joinLeaveGroup"]) as client:
        assert (await client.join("0~Lw~"))["success"] is True
        await asyncio.to_thread(app.request, "emit", event="still", args=["here"])
        assert (await client.receive())["data"] == '42["still","here"]'
