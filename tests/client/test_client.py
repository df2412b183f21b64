"""``WebPubSubClient`` against the real service: operations, events, streams and errors.

Absence is proven with a marker: a connection receives messages in the order the service
sent them, so whatever did not arrive before a later marker message was not delivered.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from google.protobuf import any_pb2, wrappers_pb2

from tests.client.conftest import Connect
from tests.client.helpers import PROTOCOLS, RELIABLE, TIMEOUT, Recorder, access_url
from tests.upstream_app import Reply, UpstreamApp
from webpubsub.aio import WebPubSubServiceClient
from webpubsub.client import (
    AckResult,
    ClientStoppedError,
    ConnectedEvent,
    ConnectError,
    DataType,
    DisconnectedEvent,
    Forbidden,
    GroupMessage,
    InternalServerError,
    InvalidMessage,
    MessageStreamOverflow,
    SendTimeoutError,
    ServerMessage,
    State,
    StoppedEvent,
    WebPubSubClient,
)
from webpubsub.core.events import EventHandlerSettings, HubSettings
from webpubsub.protocols.downstream import Pong
from webpubsub.testing import ServiceThread

PACKED = any_pb2.Any()
PACKED.Pack(wrappers_pb2.StringValue(value="hello"))

DATA: list[tuple[Any, str]] = [
    ({"text": "hi", "n": [1, 2.5, None, True]}, "json"),
    ("plain text ✓", "text"),
    (b"\x00\x01\xfe\xff", "binary"),
    (PACKED.SerializeToString(), "protobuf"),
    ("", "text"),
    (None, "json"),
]


@pytest.fixture
async def app_server(service: ServiceThread, hub: str) -> Any:
    async with WebPubSubServiceClient.from_connection_string(
        service.connection_string, hub=hub
    ) as client:
        yield client


class TestOperations:
    """join, leave, send to group, with acks (spec 4.3-4.6)."""

    @pytest.mark.parametrize("protocol", PROTOCOLS)
    async def test_every_data_type_reaches_the_group(self, connect: Connect, protocol: str) -> None:
        alice = await connect("alice", protocol=protocol)
        bob = await connect("bob", protocol=protocol)
        inbox = Recorder(bob)
        assert await bob.join_group("room") == AckResult(1)
        for i, (data, data_type) in enumerate(DATA):
            assert await alice.send_to_group("room", data, data_type) == AckResult(i + 1)
            message = await inbox.next(GroupMessage)
            assert (message.group, message.data, message.data_type) == ("room", data, data_type)
            is_json = protocol.startswith("json")
            assert message.from_user_id == ("alice" if is_json else None)
            assert (message.sequence_id is not None) == (".reliable." in protocol)

    @pytest.mark.parametrize("protocol", PROTOCOLS)
    async def test_leave_no_echo_and_fire_and_forget(self, connect: Connect, protocol: str) -> None:
        alice = await connect("alice", protocol=protocol)
        inbox = Recorder(alice)
        await alice.join_group("a")
        await alice.join_group("b")
        await alice.leave_group("a")
        assert alice.joined_groups == ("b",)
        await alice.send_to_group("a", "not for me: left", "text")
        await alice.send_to_group("b", "not for me: no echo", "text", no_echo=True)
        result = await alice.send_to_group("b", "marker", "text", fire_and_forget=True)
        assert result == AckResult(None)
        assert (await inbox.next(GroupMessage)).data == "marker"

    async def test_forbidden(self, connect: Connect) -> None:
        client = await connect(roles=("webpubsub.joinLeaveGroup.mine",))
        with pytest.raises(Forbidden) as raised:
            await client.join_group("theirs")
        assert raised.value.ack_id == 1 and raised.value.name == "Forbidden"
        assert "theirs" in raised.value.message
        with pytest.raises(Forbidden):
            await client.send_to_group("mine", "x", "text")
        await client.join_group("mine")  # the connection survives refusals

    async def test_invalid_group_name(self, connect: Connect) -> None:
        client = await connect()
        with pytest.raises(InvalidMessage) as raised:
            await client.join_group("")
        assert raised.value.name == "BadRequest"

    async def test_duplicate_ack_id_is_success_and_not_redelivered(self, connect: Connect) -> None:
        client = await connect()
        inbox = Recorder(client)
        await client.join_group("g")
        assert await client.send_to_group("g", 1, "json", ack_id=42) == AckResult(42, False)
        assert await client.send_to_group("g", 2, "json", ack_id=42) == AckResult(42, True)
        await client.send_to_group("g", 3, "json")
        assert [m.data for m in await inbox.messages(GroupMessage, 2)] == [1, 3]

    async def test_bad_arguments_fail_before_sending(self, connect: Connect) -> None:
        client = await connect()
        with pytest.raises(TypeError):
            await client.send_to_group("g", b"bytes", "text")
        with pytest.raises(ValueError):
            await client.send_to_group("g", "x", "xml")
        with pytest.raises(ValueError, match="fire-and-forget"):
            await client.send_event("e", "x", DataType.TEXT, fire_and_forget=True, ack_id=3)

    async def test_ack_timeout(self, service: ServiceThread, hub: str, connect: Connect) -> None:
        with UpstreamApp() as app:
            _handle_events(service, hub, app)
            app.rules["slow"] = Reply(204, delay=0.5)
            client = await connect()
            with pytest.raises(SendTimeoutError) as raised:
                await client.send_event("slow", "x", "text", timeout=0.05)
            assert isinstance(raised.value, TimeoutError) and raised.value.ack_id == 1
            await client.stop()


def _handle_events(service: ServiceThread, hub: str, app: UpstreamApp) -> None:
    settings = HubSettings((EventHandlerSettings(app.url_template),))
    service.call(lambda: service.settings.hubs.__setitem__(hub.lower(), settings))


class TestEvents:
    """send_event and the upstream (spec 4.5, 5.8)."""

    @pytest.mark.parametrize("protocol", PROTOCOLS)
    async def test_reply_then_ack(
        self, service: ServiceThread, hub: str, connect: Connect, protocol: str
    ) -> None:
        with UpstreamApp() as app:
            _handle_events(service, hub, app)
            app.rules["ask"] = Reply(200, b'{"answer":42}', {"Content-Type": "application/json"})
            client = await connect(protocol=protocol)
            inbox = Recorder(client)
            assert await client.send_event("ask", b"\x01\x02", "binary") == AckResult(1)
            reply = inbox.of(ServerMessage)  # it came before the ack
            assert [(r.data, r.data_type) for r in reply] == [({"answer": 42}, DataType.JSON)]
            [request] = app.events("ask")
            assert request.body == b"\x01\x02"
            await client.send_event("ask", "fire", "text", fire_and_forget=True)
            await asyncio.to_thread(
                app.wait_for, lambda requests: [r.body for r in requests][-1:] == [b"fire"]
            )
            await client.stop()

    async def test_failures_are_internal_server_errors(
        self, service: ServiceThread, hub: str, connect: Connect
    ) -> None:
        client = await connect()
        with pytest.raises(InternalServerError, match="No event handler"):
            await client.send_event("nobody", {"x": 1}, "json")
        with UpstreamApp() as app:
            _handle_events(service, hub, app)
            app.rules["fail"] = Reply(500)
            with pytest.raises(InternalServerError):
                await client.send_event("fail", "x", "text")
            await client.stop()


class TestMetadata:
    """metadata on sends and events, exposed on received messages (spec-next 3)."""

    @pytest.mark.parametrize("protocol", PROTOCOLS)
    async def test_group_metadata(self, connect: Connect, protocol: str) -> None:
        alice = await connect("alice", protocol=protocol)
        inbox = Recorder(alice)
        await alice.join_group("g")
        await alice.send_to_group("g", "hi", "text", metadata={"Trace-Id": "abc"})
        message = await inbox.next(GroupMessage)
        assert (message.data, message.metadata) == ("hi", {"Trace-Id": "abc"})
        await alice.send_to_group("g", "plain", "text")
        assert (await inbox.next(GroupMessage)).metadata is None
        with pytest.raises(ValueError, match="metadata"):
            await alice.send_to_group("g", "x", "text", metadata={"k": "é"})

    @pytest.mark.parametrize("protocol", PROTOCOLS)
    async def test_ttl_seconds(self, connect: Connect, protocol: str) -> None:
        alice = await connect("alice", protocol=protocol)
        inbox = Recorder(alice)
        await alice.join_group("g")
        await alice.send_to_group("g", "in time", "text", ttl_seconds=300)
        assert (await inbox.next(GroupMessage)).data == "in time"
        for bad in (-1, 301, 1.5):
            with pytest.raises(ValueError, match="ttl_seconds"):
                await alice.send_to_group("g", "x", "text", ttl_seconds=bad)  # type: ignore[arg-type]

    async def test_event_metadata_both_ways(
        self, service: ServiceThread, hub: str, connect: Connect
    ) -> None:
        with UpstreamApp() as app:
            _handle_events(service, hub, app)
            app.rules["e"] = Reply(204, headers={"X-WebPubSub-Metadata-Status": "done"})
            client = await connect()
            inbox = Recorder(client)
            await client.send_event("e", "x", "text", metadata={"Trace": "1"})
            reply = inbox.of(ServerMessage)
            assert [(r.data, r.metadata) for r in reply] == [("", {"status": "done"})]
            [request] = app.events("e")
            assert request.headers["x-webpubsub-metadata-trace"] == "1"
            await client.stop()


class TestServerMessages:
    """REST sends reach the client as server and group messages (spec 4.4)."""

    @pytest.mark.parametrize("protocol", PROTOCOLS)
    async def test_rest_sends(self, app_server: Any, connect: Connect, protocol: str) -> None:
        client = await connect("alice", protocol=protocol)
        inbox = Recorder(client)
        await client.join_group("g")
        await app_server.send_to_all({"to": "all"})
        await app_server.send_to_user("alice", "to user", content_type="text/plain")
        await app_server.send_to_connection(client.connection_id, b"\x07")
        await app_server.group("g").send_to_all("to group", content_type="text/plain")
        received = [await inbox.next(ServerMessage) for _ in range(3)]
        assert [(m.data, m.data_type) for m in received] == [
            ({"to": "all"}, DataType.JSON),
            ("to user", DataType.TEXT),
            (b"\x07", DataType.BINARY),
        ]
        group = await inbox.next(GroupMessage)
        assert (group.group, group.data, group.from_user_id) == ("g", "to group", None)


class TestCallbacksAndStreams:
    async def test_sync_and_async_handlers(self, connect: Connect) -> None:
        client = await connect(start=False)
        seen: list[str] = []
        replied = asyncio.Event()
        echoed = asyncio.Event()

        def record(message: GroupMessage) -> None:
            seen.append(message.data)
            if message.data == "pong":
                echoed.set()

        def failing(message: GroupMessage) -> None:
            raise RuntimeError("handler bug")  # logged, never raised into the client

        async def reply(message: GroupMessage) -> None:
            if message.data == "ping":
                await client.send_to_group("g", "pong", "text")  # a handler may await
                replied.set()

        client.on("group-message", failing)
        client.on("group_message", record)
        client.on("group-message", reply)
        client.off("group-message", failing)
        with pytest.raises(ValueError, match="unknown event"):
            client.on("message", print)  # type: ignore[call-overload]
        await client.start()
        await client.join_group("g")
        await client.send_to_group("g", "ping", "text")
        await asyncio.wait_for(replied.wait(), TIMEOUT)
        await asyncio.wait_for(echoed.wait(), TIMEOUT)
        assert seen == ["ping", "pong"]

    async def test_a_failing_handler_is_logged(
        self, connect: Connect, caplog: pytest.LogCaptureFixture
    ) -> None:
        client = await connect(start=False)
        client.on("connected", lambda e: 1 / 0)
        with caplog.at_level(logging.ERROR, logger="webpubsub.client"):
            await client.start()
        assert "connected handler" in caplog.text

    async def test_message_stream(self, connect: Connect, app_server: Any) -> None:
        client = await connect()
        stream = client.messages()
        await client.join_group("g")
        await client.send_to_group("g", 1, "json")
        await app_server.send_to_all(2)
        received = [await asyncio.wait_for(anext(stream), TIMEOUT) for _ in range(2)]
        assert [(type(m), m.data) for m in received] == [(GroupMessage, 1), (ServerMessage, 2)]
        await client.stop()
        assert [m async for m in stream] == []  # the stream ends with the client

    async def test_stream_overflow_is_loud(self, connect: Connect) -> None:
        client = await connect()
        async with client.messages(maxsize=2) as stream:
            await client.join_group("g")
            for i in range(3):
                await client.send_to_group("g", i, "json")
            await client.send_to_group("g", "sync", "text")  # acked after the three echoes
            assert stream.closed
            assert [(await anext(stream)).data for _ in range(2)] == [0, 1]
            with pytest.raises(MessageStreamOverflow):
                await anext(stream)

    async def test_closed_stream_gets_nothing_more(self, connect: Connect) -> None:
        client = await connect()
        stream = client.messages()
        stream.close()
        await client.join_group("g")
        await client.send_to_group("g", 1, "json")
        assert len(stream) == 0
        with pytest.raises(StopAsyncIteration):
            await anext(stream)


class TestLifecycle:
    async def test_properties_and_context_manager(self, service: ServiceThread, hub: str) -> None:
        client = WebPubSubClient(access_url(service, hub, "carol"))
        events = Recorder(client)
        assert client.state is State.STOPPED and client.connection_id is None
        async with client:
            assert client.state is State.CONNECTED and client.is_connected
            assert client.user_id == "carol"
            connected = await events.next(ConnectedEvent)
            assert connected == ConnectedEvent(client.connection_id, "carol")  # type: ignore[arg-type]
            assert "connected" in repr(client)
            with pytest.raises(RuntimeError, match="already started"):
                await client.start()
        disconnected = await events.next(DisconnectedEvent)
        assert disconnected.connection_id == connected.connection_id
        assert disconnected.close_code == 1000
        await events.next(StoppedEvent)
        assert client.state is State.STOPPED and not client.is_connected
        with pytest.raises(ClientStoppedError):
            await client.join_group("g")
        await client.stop()  # stopping twice is fine
        async with client:  # and a stopped client starts again
            assert client.connection_id != connected.connection_id

    async def test_credential_callable_is_called_per_connection(
        self, service: ServiceThread, hub: str, app_server: Any
    ) -> None:
        calls = 0

        async def fetch() -> str:
            nonlocal calls
            calls += 1
            token = await app_server.get_client_access_token(
                user_id=f"user{calls}", roles=["webpubsub.joinLeaveGroup"]
            )
            return str(token["url"])

        client = WebPubSubClient(fetch)
        events = Recorder(client)
        async with client:
            await client.join_group("g")
            first = client.connection_id
            await app_server.close_connection(first, reason="rotate")
            disconnected = await events.next(DisconnectedEvent)
            assert (disconnected.message, disconnected.close_code) == ("rotate", 1008)
            await events.next(ConnectedEvent)
            second = await events.next(ConnectedEvent)
            assert second.connection_id != first and second.user_id == "user2"
            members = [m async for m in app_server.group("g").list_connections()]
            assert [m.connection_id for m in members] == [second.connection_id]
        assert calls == 2

    async def test_refused_handshake(self, service: ServiceThread, hub: str) -> None:
        url = access_url(service, hub).replace("access_token=", "access_token=x")
        client = WebPubSubClient(url)
        with pytest.raises(ConnectError) as raised:
            await client.start()
        assert raised.value.status_code == 401
        assert client.state is State.STOPPED

    async def test_failing_credential(self) -> None:
        async def broken() -> str:
            raise OSError("app server down")

        with pytest.raises(ConnectError, match="app server down"):
            await WebPubSubClient(broken).start()
        with pytest.raises(ConnectError, match="not a URL"):
            await WebPubSubClient(lambda: 42).start()  # type: ignore[arg-type,return-value]
        with pytest.raises(ConnectError, match="ws://"):
            await WebPubSubClient(lambda: "http://x/client/hubs/h").start()

    async def test_start_timeout(self) -> None:
        silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = silent.sockets[0].getsockname()[1]
        client = WebPubSubClient(f"ws://127.0.0.1:{port}/client/hubs/h", start_timeout=0.1)
        with pytest.raises(ConnectError, match="start_timeout"):
            await client.start()
        assert client.state is State.STOPPED
        silent.close()

    def test_invalid_arguments(self) -> None:
        with pytest.raises(ValueError, match="ws://"):
            WebPubSubClient("https://host/client/hubs/h?access_token=t")
        with pytest.raises(TypeError):
            WebPubSubClient(42)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unknown subprotocol"):
            WebPubSubClient("ws://host/client/hubs/h", protocol="mqtt")

    async def test_stop_fails_waiting_operations(
        self, service: ServiceThread, hub: str, connect: Connect
    ) -> None:
        with UpstreamApp() as app:
            _handle_events(service, hub, app)
            app.rules["slow"] = Reply(204, delay=0.5)
            client = await connect()
            pending = asyncio.ensure_future(client.send_event("slow", "x", "text"))
            await asyncio.to_thread(
                app.wait_for, lambda requests: any(r.event == "slow" for r in requests)
            )
            await client.stop()
            with pytest.raises(ClientStoppedError):
                await pending

    async def test_cancelled_operation_is_forgotten(self, connect: Connect) -> None:
        client = await connect()
        task = asyncio.ensure_future(client.join_group("g"))
        await asyncio.sleep(0)  # one loop turn: the request is sent, its ack not yet read
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await client.join_group("h") == AckResult(2)
        assert client.joined_groups == ("h",)  # the late ack of the abandoned join is ignored


@pytest.mark.parametrize("protocol", RELIABLE)
async def test_keep_alive_ping_gets_a_pong(connect: Connect, protocol: str) -> None:
    client = await connect(protocol=protocol, keep_alive_interval=0.01, keep_alive_timeout=5)
    pong = asyncio.get_running_loop().create_future()
    receive = client._core.receive

    def spy(data: bytes | str, now: float) -> None:
        if isinstance(client._core.codec.decode_downstream(data), Pong) and not pong.done():
            pong.set_result(None)
        receive(data, now)

    client._core.receive = spy  # type: ignore[method-assign]
    await asyncio.wait_for(pong, TIMEOUT)
