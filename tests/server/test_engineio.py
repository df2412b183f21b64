"""The Engine.IO endpoint (socketio spec 2.2) with a small app server on the tunnel
(tests/tunnel_client.py): sessions, polls and WebSocket frames, bad input, and what is left
behind. The official packages run the acceptance checks in tests/compat/test_socketio.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from tests.server.helpers import TIMEOUT, async_wait_until
from tests.tunnel_client import TunnelClient
from webpubsub.protocols import tunnel as t
from webpubsub.testing import ServiceThread

PING = {"pingInterval": 200, "pingTimeout": 100, "maxPayload": 1000}  # short, small


def path(service: ServiceThread, hub: str) -> str:
    return f"{service.endpoint}/clients/socketio/hubs/{hub}/"


def app_server(handshake: dict[str, Any]) -> Any:
    async def handler(request: t.HttpRequest) -> tuple[int, dict[str, list[str]], bytes]:
        if request.headers.get("ce-type") == ["azure.webpubsub.sys.connect"]:
            sid = request.headers["ce-connectionId"][0]
            body = {"socketio": {"sid": sid, "upgrades": [], **handshake}}
            return 200, {"Content-Type": ["application/json"]}, json.dumps(body).encode()
        return 200, {}, b""

    return handler


@pytest.fixture
async def tunnel(service: ServiceThread, hub: str) -> AsyncIterator[TunnelClient]:
    client = await TunnelClient.open(service, hub, handler=app_server(PING))
    try:
        yield client
    finally:
        await client.ws.close()


def sessions_of(service: ServiceThread, hub: str) -> list[str]:
    """The hub's Engine.IO sessions still open (the service is shared by the tests)."""
    return [
        sid
        for sid, session in service.service.socketio.sessions.items()
        if session.conn is not None and session.conn.hub == hub
    ]


def events(tunnel: TunnelClient, ce_type: str) -> list[t.HttpRequest]:
    return [r for r in tunnel.requests if r.headers.get("ce-type") == [ce_type]]


async def open_polling(client: httpx.AsyncClient, url: str) -> str:
    answer = await client.get(url, params={"EIO": "4", "transport": "polling"})
    assert answer.status_code == 200, answer.text
    assert answer.text.startswith("0")
    opened = json.loads(answer.text[1:])
    assert opened["upgrades"] == ["websocket"] and opened["pingInterval"] == 200
    return str(opened["sid"])


async def test_polling_session_round_trip_and_leftovers(
    service: ServiceThread, hub: str, tunnel: TunnelClient
) -> None:
    url = path(service, hub)
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        sid = await open_polling(client, url)
        query = {"EIO": "4", "transport": "polling", "sid": sid}
        answer = await client.post(url, params=query, content='40\x1e42["hi"]\x1ebAAE=')
        assert (answer.status_code, answer.text) == (200, "ok")
        await async_wait_until(lambda: events(tunnel, "azure.webpubsub.user.message"), "the event")
        (message,) = events(tunnel, "azure.webpubsub.user.message")
        assert message.content == b'40\x1e42["hi"]\x1ebAAE='  # one event, as it came
        sent = await tunnel.call(
            "POST",
            f"/api/hubs/{hub}/connections/{sid}/:send",
            b'40{"sid":"s1"}\x1ebAAI=',
            "text/plain",
        )
        assert sent.status == 202
        answer = await client.get(url, params=query)
        assert answer.text == '40{"sid":"s1"}\x1ebAAI='
        # Two polls at once: engine.io's overlap, the session ends.
        first = asyncio.create_task(client.get(url, params=query))
        await asyncio.sleep(0)  # let it start waiting
        await async_wait_until(
            lambda: service.service.socketio.sessions[sid].poll is not None, "the first poll"
        )
        second = await client.get(url, params=query)
        assert second.status_code == 400
        assert (await first).text.endswith("1")  # closed
        await async_wait_until(
            lambda: events(tunnel, "azure.webpubsub.sys.disconnected"), "disconnected"
        )
    assert not sessions_of(service, hub)
    assert hub not in service.service.node.hubs


@pytest.mark.parametrize(
    "body",
    [b"\xff\xfe", b"9nope", b"bnot base64!", b"", b"4" * 2000],
)
async def test_bad_payloads_end_the_session(
    service: ServiceThread, hub: str, tunnel: TunnelClient, body: bytes
) -> None:
    url = path(service, hub)
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        sid = await open_polling(client, url)
        query = {"EIO": "4", "transport": "polling", "sid": sid}
        answer = await client.post(url, params=query, content=body)
        assert answer.status_code in (400, 413)
        assert answer.json()["code"] == 3
        again = await client.get(url, params=query)
        assert (again.status_code, again.json()["code"]) == (400, 1)  # gone
    assert not sessions_of(service, hub)


async def test_a_silent_polling_client_is_gone(
    service: ServiceThread, hub: str, tunnel: TunnelClient
) -> None:
    """No poll for ping interval + timeout (300 ms here): the session ends, the app server
    hears `disconnected` (the service's tick looks once a second)."""
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        await open_polling(client, path(service, hub))
    await async_wait_until(
        lambda: events(tunnel, "azure.webpubsub.sys.disconnected"), "disconnected"
    )
    assert not sessions_of(service, hub)


async def test_websocket_bad_frames(service: ServiceThread, hub: str, tunnel: TunnelClient) -> None:
    url = "ws" + path(service, hub)[4:] + "?EIO=4&transport=websocket"
    async with websockets.connect(url) as ws:
        opened = await ws.recv()
        assert isinstance(opened, str) and opened.startswith("0")
        assert json.loads(opened[1:])["upgrades"] == []
        await ws.send("bAAE=")  # a binary packet must be a binary frame
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
    await async_wait_until(lambda: not sessions_of(service, hub), "the session's end")


async def test_unknown_and_unsupported(service: ServiceThread, hub: str) -> None:
    url = path(service, hub)
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        answer = await client.post(url, params={"EIO": "4", "transport": "polling"})
        assert (answer.status_code, answer.json()["code"]) == (400, 2)
        answer = await client.options(url, headers={"Origin": "http://app.example"})
        assert answer.status_code == 204
        assert answer.headers["access-control-allow-origin"] == "http://app.example"
        # No app server connected for the hub: 503, nothing registered.
        answer = await client.get(url, params={"EIO": "4", "transport": "polling"})
        assert answer.status_code == 503
    assert not sessions_of(service, hub)


async def test_the_hub_connection_limit_counts_socketio_clients() -> None:
    from tests.hardening.support import running

    with running(max_connections_per_hub=2) as service:
        hub = "limited"
        tunnel = await TunnelClient.open(service, hub, handler=app_server({}))
        try:
            url = path(service, hub)
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                await open_polling_any(client, url)
                await open_polling_any(client, url)
                answer = await client.get(url, params={"EIO": "4", "transport": "polling"})
                assert answer.status_code == 429
                assert answer.json()["code"] == "Error.TooManyConnections"
        finally:
            await tunnel.ws.close()


async def open_polling_any(client: httpx.AsyncClient, url: str) -> str:
    answer = await client.get(url, params={"EIO": "4", "transport": "polling"})
    assert answer.status_code == 200, answer.text
    return str(json.loads(answer.text[1:])["sid"])


async def test_a_poll_whose_connection_closes_ends_the_session(
    service: ServiceThread, hub: str
) -> None:
    """As engine.io: a held poll's TCP connection closing first ends the session (what the
    poll took could not be answered), and the app server hears `disconnected` at once, not
    after engine.io's default ping interval + timeout (45 s)."""
    tunnel = await TunnelClient.open(service, hub, handler=app_server({}))
    url = path(service, hub)
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        answer = await client.get(url, params={"EIO": "4", "transport": "polling"})
        sid = json.loads(answer.text[1:])["sid"]
    target = f"/clients/socketio/hubs/{hub}/?EIO=4&transport=polling&sid={sid}"
    _, writer = await asyncio.open_connection(service.settings.host, service.settings.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    await async_wait_until(
        lambda: (
            sid in service.service.socketio.sessions
            and service.service.socketio.sessions[sid].poll is not None
        ),
        "the poll to be held",
    )
    writer.close()
    await async_wait_until(lambda: not sessions_of(service, hub), "the session's end")
    await async_wait_until(
        lambda: events(tunnel, "azure.webpubsub.sys.disconnected"), "disconnected"
    )
    await tunnel.ws.close()


async def test_rest_and_metrics_see_socketio_connections(
    service: ServiceThread, hub: str, tunnel: TunnelClient
) -> None:
    """A Socket.IO client is a connection like any other: REST exists, group membership and
    sends, close; /metrics counts it under its own subprotocol label."""
    from azure.messaging.webpubsubservice import WebPubSubServiceClient

    rest = WebPubSubServiceClient.from_connection_string(service.connection_string, hub=hub)
    url = path(service, hub)
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        sid = await open_polling(client, url)
        query = {"EIO": "4", "transport": "polling", "sid": sid}
        assert await asyncio.to_thread(rest.connection_exists, sid)
        await asyncio.to_thread(rest.add_connection_to_group, "room", sid)
        await asyncio.to_thread(
            rest.send_to_group, "room", '42["m","x"]', content_type="text/plain"
        )
        assert (await client.get(url, params=query)).text == '42["m","x"]'
        metrics = (await client.get(f"{service.endpoint}/metrics")).text
        assert (
            f'webpubsub_connections_opened_total{{hub="{hub}",subprotocol="socketio"}}' in metrics
        )
        await asyncio.to_thread(rest.close_connection, sid, reason="bye")
        answer = await client.get(url, params=query)
        assert answer.text.endswith("1")  # Engine.IO's close
    await async_wait_until(
        lambda: events(tunnel, "azure.webpubsub.sys.disconnected"), "disconnected"
    )
    assert not await asyncio.to_thread(rest.connection_exists, sid)
