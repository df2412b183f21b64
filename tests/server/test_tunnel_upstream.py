"""Events over the tunnel (socketio spec 4.3, 4.6): the CloudEvents an app server receives,
pinning to one app server, several app servers per hub, reconnects within the grace period.

The hubs here are classic hubs whose handler URL is ``tunnel:///eventhandler/`` (what the
``awps-tunnel`` tool configures); Socket.IO connections take the same path by pinning.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from tests.conftest import ACCESS_KEY
from tests.server.helpers import (
    async_wait_until,
    client_token,
    client_url,
    connect_json,
    refused_handshake,
)
from tests.tunnel_client import TunnelClient, event_type
from webpubsub.core.events import EventHandlerSettings, EventKind, HubSettings, UpstreamRejected
from webpubsub.core.tunnels import TUNNEL_HANDLER
from webpubsub.protocols import tunnel as t
from webpubsub.server.client_endpoint import Pending
from webpubsub.server.config import Settings
from webpubsub.server.http import HttpRequest
from webpubsub.testing import ServiceThread

CONNECT = "azure.webpubsub.sys.connect"
MESSAGE = "azure.webpubsub.user.message"
DISCONNECTED = "azure.webpubsub.sys.disconnected"
T = TypeVar("T")


def tunnel_hub(service: ServiceThread, hub: str) -> str:
    settings = HubSettings((EventHandlerSettings("tunnel:///eventhandler/"),))

    def configure() -> None:
        service.settings.hubs[hub.lower()] = settings
        service.service.upstream.retry_delays = (0.01, 0.01, 0.01)

    service.call(configure)
    return hub


async def echo(request: t.HttpRequest) -> tuple[int, dict[str, list[str]], bytes]:
    """Accept connects; answer a user event with its own text."""
    kind = event_type(request)
    if kind == CONNECT:
        return 204, {}, b""
    if kind == MESSAGE:
        return 200, {"Content-Type": ["text/plain"]}, b"echo:" + request.content
    return 200, {}, b""


def pinned(service: ServiceThread, hub: str, connection_id: str) -> str | None:
    return service.call(lambda: service.service.tunnels.registry.pinned(hub, connection_id))


async def send_event(client: object, text: str) -> dict[str, object]:
    return await client.request(  # type: ignore[attr-defined, no-any-return]
        {"type": "event", "event": "message", "dataType": "text", "data": text}
    )


class TestEvents:
    async def test_cloud_events_over_the_tunnel(self, service: ServiceThread, hub: str) -> None:
        tunnel_hub(service, hub)
        async with await TunnelClient.open(service, hub, sub="A", handler=echo) as app:
            client = await connect_json(service, hub, user_id="bob")
            cid = client.connection_id
            connect = await app.wait_for(lambda r: event_type(r) == CONNECT)
            assert connect.method == "POST"
            assert connect.url == f"{service.endpoint}/eventhandler/"
            headers = connect.headers
            for name in ("ce-awpsversion", "WebHook-Request-Origin", "ce-specversion", "ce-id"):
                assert headers[name], name
            assert headers["ce-hub"] == [hub.lower()]
            assert headers["ce-connectionId"] == [cid]
            assert headers["ce-userId"] == ["bob"]
            assert headers["Content-Type"] == ["application/json; charset=utf-8"]
            assert json.loads(connect.content)["claims"]["sub"] == ["bob"]
            assert pinned(service, hub, cid) == "A"

            ack = await send_event(client, "42[1]")
            assert ack["success"] is True
            reply = await client.receive()
            assert reply["data"] == "echo:42[1]"
            message = await app.wait_for(lambda r: event_type(r) == MESSAGE)
            assert message.headers["Content-Type"] == ["text/plain"]
            assert message.content == b"42[1]"

            await client.close()
            gone = await app.wait_for(lambda r: event_type(r) == DISCONNECTED)
            assert gone.headers["ce-connectionId"] == [cid]
            await async_wait_until(lambda: pinned(service, hub, cid) is None, "unpinned")

    async def test_user_events_in_order(self, service: ServiceThread, hub: str) -> None:
        """One at a time per connection, each waiting for its answer (spec 4.3)."""
        tunnel_hub(service, hub)
        async with (
            await TunnelClient.open(service, hub, handler=echo) as app,
            await connect_json(service, hub) as client,
        ):
            for i in range(20):
                await client.send(
                    {"type": "event", "event": "message", "dataType": "text", "data": str(i)}
                )
            replies = [(await client.receive())["data"] for _ in range(20)]
            assert replies == [f"echo:{i}" for i in range(20)]
            texts = [r.content for r in app.requests if event_type(r) == MESSAGE]
            assert texts == [str(i).encode() for i in range(20)]

    async def test_no_app_server_refuses_503(self, service: ServiceThread, hub: str) -> None:
        tunnel_hub(service, hub)
        token = client_token(service, hub)
        response = await refused_handshake(client_url(service, hub, token=token))
        assert response.status_code == 503

    async def test_refused_connect_unpins(self, service: ServiceThread, hub: str) -> None:
        tunnel_hub(service, hub)

        async def refuse(request: t.HttpRequest) -> tuple[int, dict[str, list[str]], bytes]:
            return 401, {}, b"no"

        async with await TunnelClient.open(service, hub, handler=refuse):
            token = client_token(service, hub)
            response = await refused_handshake(client_url(service, hub, token=token))
            assert response.status_code == 401
            pins = service.call(lambda: service.service.tunnels.registry.pins())
            assert [pin for pin in pins if pin[0] == hub.lower()] == []


class TestSeveralAppServers:
    async def test_pinned_round_robin(self, service: ServiceThread, hub: str) -> None:
        tunnel_hub(service, hub)
        async with (
            await TunnelClient.open(service, hub, sub="A", handler=echo) as a,
            await TunnelClient.open(service, hub, sub="B", handler=echo) as b,
        ):
            clients = [await connect_json(service, hub) for _ in range(4)]
            owners = [pinned(service, hub, c.connection_id) for c in clients]
            assert sorted(owners) == ["A", "A", "B", "B"]  # type: ignore[type-var]
            for client in clients:
                await send_event(client, client.connection_id)
            for app, name in ((a, "A"), (b, "B")):
                got = {r.content.decode() for r in app.requests if event_type(r) == MESSAGE}
                mine = {c.connection_id for c, o in zip(clients, owners, strict=True) if o == name}
                assert got == mine
            for client in clients:
                await client.close()

    async def test_a_second_socket_of_one_app_server(
        self, service: ServiceThread, hub: str
    ) -> None:
        """Both sockets of one ``sub`` serve its connections (ConnectionRebalance's case)."""
        tunnel_hub(service, hub)
        async with (
            await TunnelClient.open(service, hub, sub="A", handler=echo) as a1,
            await TunnelClient.open(service, hub, sub="A", handler=echo) as a2,
            await connect_json(service, hub) as client,
        ):
            for i in range(4):
                assert (await send_event(client, str(i)))["success"] is True
            assert {
                len([r for r in app.requests if event_type(r) == MESSAGE]) for app in (a1, a2)
            } == {2}


class TestReconnect:
    async def test_same_sub_takes_over_within_grace(self, service: ServiceThread, hub: str) -> None:
        """The connection waits for its own app server; another one (B) never gets it."""
        tunnel_hub(service, hub)
        first = await TunnelClient.open(service, hub, sub="A", handler=echo)
        async with await connect_json(service, hub) as client:
            await first.wait_for(lambda r: event_type(r) == CONNECT)
            other = await TunnelClient.open(service, hub, sub="B", handler=echo)
            await first.close()
            await async_wait_until(
                lambda: service.call(lambda: len(service.service.tunnels.sessions)) == 1,
                "the tunnel gone",
            )
            # an event now waits for the app server to come back
            await client.send(
                {"type": "event", "event": "message", "dataType": "text", "data": "x", "ackId": 1}
            )
            async with await TunnelClient.open(service, hub, sub="A", handler=echo) as second:
                ack = await client.ack(1)
                assert ack["success"] is True
                assert [r.content for r in second.requests if event_type(r) == MESSAGE] == [b"x"]
            assert [r for r in other.requests if event_type(r) == MESSAGE] == []
            await other.close()

    async def test_past_grace_the_connection_closes(self) -> None:
        settings = Settings(port=0, access_keys=[ACCESS_KEY])
        settings.limits.tunnel_grace = 0.3
        with ServiceThread(settings) as service:
            hub = tunnel_hub(service, "grace")
            app = await TunnelClient.open(service, hub, sub="A", handler=echo)
            client = await connect_json(service, hub)
            await app.close()
            code, reason, _ = await client.until_closed(timeout=5)
            assert code == 1001
            assert "app server" in reason
            assert service.call(lambda: service.service.tunnels.registry.pins()) == []


def socketio_pending(service: ServiceThread, hub: str, query: str) -> Pending:
    request = HttpRequest(
        "GET", f"/clients/socketio/hubs/{hub}/?{query}", [("user-agent", "test")], b"", "peer"
    )
    return Pending(request, hub.lower(), hub, {"sub": "bob"}, "bob", [], [], [], None)


def run(service: ServiceThread, coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run_coroutine_threadsafe(coro, service.service.loop).result(10)


class TestSocketioConnect:
    """``Upstream.socketio_connect``: the Socket.IO ``connect`` over the tunnel (spec 4.3)."""

    async def test_open_packet_and_body(self, service: ServiceThread, hub: str) -> None:
        async with await TunnelClient.open(service, hub, sub="A") as app:
            pending = socketio_pending(service, hub, "EIO=4&transport=polling&access_token=t")
            packet = await asyncio.to_thread(
                run, service, service.service.upstream.socketio_connect(pending)
            )
            assert packet["sid"] == pending.connection_id
            connect = await app.wait_for(lambda r: event_type(r) == CONNECT)
            assert connect.url == f"{service.endpoint}/eventhandler/"
            body = json.loads(connect.content)
            assert body["query"] == {"EIO": ["4"], "transport": ["polling"]}
            assert body["headers"] == {"user-agent": ["test"]}
            assert body["claims"] == {"sub": ["bob"]}
            assert pinned(service, hub, pending.connection_id) == "A"

    async def test_no_app_server(self, service: ServiceThread, hub: str) -> None:
        pending = socketio_pending(service, hub, "EIO=4")
        with pytest.raises(UpstreamRejected) as info:
            await asyncio.to_thread(
                run, service, service.service.upstream.socketio_connect(pending)
            )
        assert info.value.status == 503

    async def test_refused_by_the_app_server(self, service: ServiceThread, hub: str) -> None:
        async def refuse(request: t.HttpRequest) -> tuple[int, dict[str, list[str]], bytes]:
            return 400, {}, b"EIO server refused connection with error: nope"

        async with await TunnelClient.open(service, hub, handler=refuse):
            pending = socketio_pending(service, hub, "EIO=3")
            with pytest.raises(UpstreamRejected) as info:
                await asyncio.to_thread(
                    run, service, service.service.upstream.socketio_connect(pending)
                )
            assert (info.value.status, info.value.message) == (
                400,
                "EIO server refused connection with error: nope",
            )
            assert pinned(service, hub, pending.connection_id) is None

    async def test_all_events_go_to_the_app_server_whatever_the_hub_has(
        self, service: ServiceThread, hub: str
    ) -> None:
        """A hub with an HTTP handler (``[hubs."*"]``, say): a Socket.IO connection's
        events still go to its app server, and only there."""
        settings = HubSettings((EventHandlerSettings("http://127.0.0.1:9/{event}"),))
        service.call(lambda: service.settings.hubs.__setitem__(hub.lower(), settings))
        async with await TunnelClient.open(service, hub, sub="A") as app:
            pending = socketio_pending(service, hub, "EIO=4")
            await asyncio.to_thread(
                run, service, service.service.upstream.socketio_connect(pending)
            )
            upstream = service.service.upstream
            for event, kind in (
                ("message", EventKind.USER),
                ("disconnected", EventKind.DISCONNECTED),
            ):
                handler = service.call(
                    lambda e=event, k=kind: upstream.handler_for(hub, pending.connection_id, e, k)
                )
                assert handler is TUNNEL_HANDLER
            assert (
                service.call(
                    lambda: upstream.handler_for(
                        hub, pending.connection_id, "connected", EventKind.CONNECTED
                    )
                )
                is None
            )
            assert app.connected is not None


class TestLimits:
    """The same timeout and caps as over HTTP."""

    async def test_silent_app_server_times_out(self) -> None:
        settings = Settings(port=0, access_keys=[ACCESS_KEY])
        settings.limits.upstream_timeout = 0.5
        never = asyncio.Event()

        async def silent(request: t.HttpRequest) -> tuple[int, dict[str, list[str]], bytes]:
            await never.wait()
            raise AssertionError("unreachable")

        with ServiceThread(settings) as service:
            hub = tunnel_hub(service, "slow")
            async with await TunnelClient.open(service, hub, handler=silent):
                token = client_token(service, hub)
                response = await refused_handshake(client_url(service, hub, token=token))
                assert response.status_code == 500
                assert b"timed out" in (response.body or b"")
                sessions = service.call(lambda: list(service.service.tunnels.sessions))
                assert [s._exchanges for s in sessions] == [{}]

    async def test_answer_over_the_cap(self, service: ServiceThread, hub: str) -> None:
        tunnel_hub(service, hub)

        async def huge(request: t.HttpRequest) -> tuple[int, dict[str, list[str]], bytes]:
            return 200, {"Content-Type": ["application/json"]}, b" " * (65 * 1024)

        async with await TunnelClient.open(service, hub, handler=huge):
            token = client_token(service, hub)
            response = await refused_handshake(client_url(service, hub, token=token))
            assert response.status_code == 500
            assert b"cap" in (response.body or b"")
