"""A client that stops reading is cut without stalling others or growing memory (issue 6)."""

from __future__ import annotations

import asyncio
import time

import httpx
import websockets

from tests.conftest import ACCESS_KEY
from webpubsub.auth.tokens import client_audience, mint_client_token, mint_rest_token
from webpubsub.server.config import Limits, Settings
from webpubsub.testing import ServiceThread


async def test_stalled_client_is_closed_and_others_get_everything() -> None:
    settings = Settings(
        port=0,
        access_keys=[ACCESS_KEY],
        limits=Limits(max_write_buffer=256 * 1024, close_timeout=0.5),
    )
    with ServiceThread(settings) as service:
        hub = "slow"
        audience = client_audience(service.endpoint, hub)
        url = audience.replace("http://", "ws://") + "?access_token="
        url += mint_client_token(ACCESS_KEY, audience)
        # The stalled client: a raw socket that completes the handshake, then never reads.
        reader, writer = await asyncio.open_connection("127.0.0.1", service.settings.port)
        path = url.split(str(service.settings.port), 1)[1]
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        assert b" 101 " in await reader.readuntil(b"\r\n\r\n")

        def connections() -> int:
            found = service.service.node.hubs.get(hub)
            return len(found.connections) if found else 0

        async with websockets.connect(url, max_size=None) as healthy:
            assert service.call(connections) == 2
            send_url = f"{service.endpoint}/api/hubs/{hub}/:send?api-version=2024-12-01"
            headers = {
                "Authorization": f"Bearer {mint_rest_token(ACCESS_KEY, send_url)}",
                "Content-Type": "application/octet-stream",
            }
            payload = b"x" * 100_000
            count = 200  # 20 MB: far beyond the socket buffers and the 256 KB limit
            async with httpx.AsyncClient() as http:
                for _ in range(count):
                    response = await http.post(send_url, content=payload, headers=headers)
                    assert response.status_code == 202
                    if service.call(connections) == 1:
                        break
                    # the healthy client keeps reading meanwhile
                    assert len(await healthy.recv()) == len(payload)
            deadline = time.monotonic() + 10
            while service.call(connections) != 1:
                assert time.monotonic() < deadline, "the stalled client was never cut"
                await asyncio.sleep(0.05)
            # The node stays responsive after the cut.
            assert service.call(lambda: service.service.ready()[0])
        writer.close()
