"""The seam between the Socket.IO client side and the tunnel, with a raw Engine.IO client
and the test app server (tests/tunnel_client.py)."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect

from tests.conftest import ACCESS_KEY
from tests.tunnel_client import TunnelClient, default_handler, event_type
from webpubsub.protocols import tunnel as t
from webpubsub.server.config import Settings
from webpubsub.testing import ServiceThread


def engine_url(service: ServiceThread, hub: str) -> str:
    base = service.endpoint.replace("http", "ws", 1)
    return f"{base}/clients/socketio/hubs/{hub}/?EIO=4&transport=websocket"


async def test_too_many_waiting_events_end_the_connection() -> None:
    """Past ``max_pending_events`` waiting for a stuck app server, the client is closed
    (the upstream's Throttled), not left with an exception in the edge."""
    settings = Settings(port=0, access_keys=[ACCESS_KEY])
    settings.limits.max_pending_events = 1
    stuck = asyncio.Event()

    async def handler(request: t.HttpRequest) -> tuple[int, dict[str, list[str]], bytes]:
        if event_type(request) == "azure.webpubsub.user.message":
            await stuck.wait()
        return await default_handler(request)

    with ServiceThread(settings) as service:
        async with (
            await TunnelClient.open(service, "stuck", handler=handler) as app,
            connect(engine_url(service, "stuck")) as ws,
        ):
            opened = await asyncio.wait_for(ws.recv(), 5)
            assert isinstance(opened, str) and opened.startswith("0{")
            await ws.send("40")  # in flight, never answered
            await app.wait_for(lambda r: r.content == b"40")
            await ws.send('42["a"]')  # waits behind it: the one allowed
            await ws.send('42["b"]')  # one too many
            frames = []
            async for frame in ws:  # until the service closes
                frames.append(frame)
            assert "1" in frames  # Engine.IO close
            assert ws.close_code == 1000
            assert "waiting" in (ws.close_reason or "")  # not "Internal server error."
            stuck.set()
