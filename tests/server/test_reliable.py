"""Reliable connections over real sockets (spec 4.7): refusals close with 1008, an overflow
ends the connection for good, and the upstream hears ``disconnected`` only at the real end."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import ACCESS_KEY
from tests.upstream_app import UpstreamApp
from webpubsub.aio import WebPubSubServiceClient
from webpubsub.auth.tokens import client_audience, mint_client_token
from webpubsub.core.events import EventHandlerSettings, HubSettings
from webpubsub.server.config import Limits, Settings
from webpubsub.testing import ServiceThread

RELIABLE = "json.reliable.webpubsub.azure.v1"


def base_url(service: ServiceThread, hub: str) -> str:
    audience = client_audience(service.endpoint, hub)
    token = mint_client_token(ACCESS_KEY, audience, roles=["webpubsub.joinLeaveGroup"])
    return audience.replace("http://", "ws://") + f"?access_token={token}"


def recovery_url(service: ServiceThread, hub: str, connection_id: str, token: str) -> str:
    return base_url(service, hub) + (
        f"&awps_connection_id={connection_id}&awps_reconnection_token={token}"
    )


async def open_reliable(
    service: ServiceThread, hub: str
) -> tuple[ClientConnection, dict[str, str]]:
    ws = await websockets.connect(base_url(service, hub), subprotocols=[RELIABLE])  # type: ignore[list-item]
    return ws, json.loads(await ws.recv())


async def closed_with(ws: ClientConnection) -> int:
    """Read until the service closes; the close code it sent."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None, "the service sent no close frame"
    return closed.value.rcvd.code


async def refused_recovery(url: str) -> int:
    """The upgrade succeeds (101), then the service closes at once: the close code."""
    async with websockets.connect(url, subprotocols=[RELIABLE]) as ws:  # type: ignore[list-item]
        return await closed_with(ws)


async def until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.02)


@pytest.fixture
def short_window() -> Iterator[tuple[ServiceThread, UpstreamApp]]:
    with UpstreamApp() as app:
        settings = Settings(
            port=0,
            access_keys=[ACCESS_KEY],
            limits=Limits(recovery_window=0.5),
            hubs={"*": HubSettings((EventHandlerSettings(app.url_template),))},
        )
        with ServiceThread(settings) as service:
            yield service, app


async def test_wrong_token_and_unknown_connection_are_refused_with_1008(
    service: ServiceThread, hub: str
) -> None:
    ws, connected = await open_reliable(service, hub)
    ws.transport.abort()
    assert (
        await refused_recovery(
            recovery_url(service, hub, connected["connectionId"], "not-the-token")
        )
        == 1008
    )
    assert await refused_recovery(recovery_url(service, hub, "no-such-connection", "x")) == 1008


async def test_expired_window_is_refused_and_disconnected_fires_once(
    short_window: tuple[ServiceThread, UpstreamApp], hub: str
) -> None:
    service, app = short_window
    ws, connected = await open_reliable(service, hub)
    connection_id, token = connected["connectionId"], connected["reconnectionToken"]
    # A recoverable drop: no disconnected event while the connection waits for its client.
    ws.transport.abort()
    recovered = await websockets.connect(
        recovery_url(service, hub, connection_id, token),
        subprotocols=[RELIABLE],  # type: ignore[list-item]
    )
    assert json.loads(await recovered.recv())["connectionId"] == connection_id
    recovered.transport.abort()
    await until(
        lambda: (
            not service.call(
                lambda: service.service.node.connection_exists(hub.lower(), connection_id)
            )
        ),
        "the recovery window expired",
    )
    assert await refused_recovery(recovery_url(service, hub, connection_id, token)) == 1008
    app.wait_for(lambda rs: any(r.event == "disconnected" for r in rs))
    assert len(app.events("disconnected")) == 1
    assert len(app.events("connected")) == 1


async def test_buffer_overflow_closes_unrecoverably(service: ServiceThread, hub: str) -> None:
    ws, connected = await open_reliable(service, hub)
    connection_id, token = connected["connectionId"], connected["reconnectionToken"]

    def shrink() -> None:
        conn = service.service.node.find_connection(hub.lower(), connection_id)
        assert conn is not None and conn.recovery is not None
        conn.recovery.buffer.max_messages = 5

    service.call(shrink)
    async with WebPubSubServiceClient.from_connection_string(
        service.connection_string, hub=hub
    ) as rest:
        for i in range(6):  # the client never acknowledges: the sixth overflows
            await rest.send_to_connection(connection_id, str(i), content_type="text/plain")
    async with ws:
        assert await closed_with(ws) == 1008
    assert await refused_recovery(recovery_url(service, hub, connection_id, token)) == 1008


async def test_close_other_than_1000_is_a_recoverable_drop(
    service: ServiceThread, hub: str
) -> None:
    """The JS client's ``abort()`` closes with 3001 and then recovers (issue 14.8)."""
    ws, connected = await open_reliable(service, hub)
    connection_id, token = connected["connectionId"], connected["reconnectionToken"]
    await ws.close(3001, "aborted")
    async with websockets.connect(
        recovery_url(service, hub, connection_id, token),
        subprotocols=[RELIABLE],  # type: ignore[list-item]
    ) as recovered:
        again = json.loads(await asyncio.wait_for(recovered.recv(), 10))
        assert (again["event"], again["connectionId"]) == ("connected", connection_id)
        # Still the same logical connection: a join is acknowledged on the new socket.
        await recovered.send(json.dumps({"type": "joinGroup", "group": "g", "ackId": 1}))
        ack = json.loads(await asyncio.wait_for(recovered.recv(), 10))
        assert ack == {"type": "ack", "ackId": 1, "success": True}
        # A close with 1000 ends it for good.
        await recovered.close(1000)
    await until(
        lambda: (
            not service.call(
                lambda: service.service.node.connection_exists(hub.lower(), connection_id)
            )
        ),
        "the connection ended with the 1000 close",
    )
    assert await refused_recovery(recovery_url(service, hub, connection_id, token)) == 1008
