"""The chat scenario end to end: our service calls our event handler, with no other app code.

A real service (the session ``service`` fixture) has the test's hub pointed at a
``WebPubSubEventHandler`` served by uvicorn. Real WebSocket clients connect; the handler's
``handle_connect`` names the user and joins a group, ``handle_user_event`` answers, and the
official Python server SDK sends to the group.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from websockets.asyncio.client import ClientConnection

from tests.conftest import SECONDARY_KEY
from tests.handler.helpers import TIMEOUT, ASGIServerThread, events_sent_to
from webpubsub.handler import (
    ConnectedRequest,
    ConnectRequest,
    ConnectResponse,
    DisconnectedRequest,
    EventHandlerError,
    GroupJoinedRequest,
    GroupLeftRequest,
    UserEventRequest,
    UserEventResponse,
    WebPubSubEventHandler,
)
from webpubsub.testing import ServiceThread

JSON_PROTOCOL = "json.webpubsub.azure.v1"


class ChatApp:
    """The app server of the chat scenario: nothing but handler functions."""

    def __init__(self, hub: str) -> None:
        self.connected: list[ConnectedRequest] = []
        self.disconnected: list[DisconnectedRequest] = []
        self.disconnected_event = threading.Event()  # set on the server's thread
        self.handler = WebPubSubEventHandler(
            hub,
            path="/eventhandler",
            # The service signs with both its keys; knowing the secondary one is enough.
            access_keys=[SECONDARY_KEY],
            allowed_endpoints=["http://127.0.0.1"],
            handle_connect=self.handle_connect,
            handle_user_event=self.handle_user_event,
            on_connected=self.on_connected,
            on_disconnected=self.on_disconnected,
        )

    async def handle_connect(self, request: ConnectRequest) -> ConnectResponse:
        names = request.query.get("name")
        if not names:
            raise EventHandlerError(401, "say your name")
        # The state set here must reach `connected` and every later event (issue 14.7).
        request.context.set_state("messages", 100)
        return ConnectResponse(user_id=names[0], groups=["room"])

    async def handle_user_event(self, request: UserEventRequest) -> UserEventResponse | None:
        if request.context.event_name != "message":
            return None
        count = request.context.get_state("messages") + 1
        request.context.set_state("messages", count)
        return UserEventResponse.json(
            {"from": request.context.user_id, "said": request.data, "count": count}
        )

    async def on_connected(self, request: ConnectedRequest) -> None:
        self.connected.append(request)

    async def on_disconnected(self, request: DisconnectedRequest) -> None:
        self.disconnected.append(request)
        self.disconnected_event.set()


@pytest.fixture
async def chat(
    service: ServiceThread, hub: str, asgi_server: ASGIServerThread
) -> AsyncIterator[ChatApp]:
    app = ChatApp(hub)
    with events_sent_to(service, hub, f"{asgi_server.base_url}/eventhandler/{{event}}"):
        async with asgi_server.use(app.handler):
            yield app


def client_url(service: ServiceThread, hub: str, **query: str) -> str:
    sdk = WebPubSubServiceClient.from_connection_string(service.connection_string, hub=hub)
    url: str = sdk.get_client_access_token()["url"]
    return url + "".join(f"&{name}={value}" for name, value in query.items())


async def receive_json(ws: ClientConnection) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


class TestChat:
    async def test_event_answer_and_group(
        self, service: ServiceThread, hub: str, chat: ChatApp
    ) -> None:
        url = client_url(service, hub, name="alice")
        async with websockets.connect(url, subprotocols=[JSON_PROTOCOL]) as ws:  # type: ignore[list-item]
            connected = await receive_json(ws)
            assert (connected["event"], connected["userId"]) == ("connected", "alice")

            # A client sends an event, the app answers, the client receives the answer.
            for count in (101, 102):
                await ws.send(
                    json.dumps(
                        {"type": "event", "event": "message", "dataType": "text", "data": "hi"}
                    )
                )
                reply = await receive_json(ws)
                assert reply["type"] == "message"
                assert reply["from"] == "server"
                assert reply["dataType"] == "json"
                assert reply["data"] == {"from": "alice", "said": "hi", "count": count}

            # Connect joined the group: the official SDK's send to it reaches the client.
            sdk = WebPubSubServiceClient.from_connection_string(service.connection_string, hub=hub)
            await asyncio.to_thread(
                sdk.send_to_group, "room", "hello room", content_type="text/plain"
            )
            message = await receive_json(ws)
            assert (message["from"], message["group"], message["data"]) == (
                "group",
                "room",
                "hello room",
            )

        assert await asyncio.to_thread(chat.disconnected_event.wait, TIMEOUT)
        [connected_request] = chat.connected
        assert connected_request.context.user_id == "alice"
        assert connected_request.context.subprotocol == JSON_PROTOCOL
        assert connected_request.context.states == {"messages": 100}
        [disconnected] = chat.disconnected
        assert disconnected.context.user_id == "alice"
        assert disconnected.context.states == {"messages": 102}

    async def test_simple_client(self, service: ServiceThread, hub: str, chat: ChatApp) -> None:
        async with websockets.connect(client_url(service, hub, name="bob")) as ws:
            await ws.send("hey")
            reply = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
            assert reply == {"from": "bob", "said": "hey", "count": 101}

    async def test_refused_connect_reaches_the_client(
        self, service: ServiceThread, hub: str, chat: ChatApp
    ) -> None:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(client_url(service, hub)):
                pass
        assert refused.value.response.status_code == 401
        assert chat.connected == []


async def test_group_presence_hooks(
    service: ServiceThread, hub: str, asgi_server: ASGIServerThread
) -> None:
    """``on_group_joined``/``on_group_left`` receive the service's joined/left events."""
    seen: list[tuple[str, str, str]] = []
    done = threading.Event()

    def joined(request: GroupJoinedRequest) -> None:
        seen.append(("joined", request.group, request.context.connection_id))

    async def left(request: GroupLeftRequest) -> None:
        seen.append(("left", request.group, request.context.connection_id))
        done.set()

    handler = WebPubSubEventHandler(
        hub, path="/eventhandler", on_group_joined=joined, on_group_left=left
    )
    template = f"{asgi_server.base_url}/eventhandler/{{event}}"
    with events_sent_to(service, hub, template, group_presence_events=("joined", "left")):
        async with asgi_server.use(handler):
            sdk = WebPubSubServiceClient.from_connection_string(service.connection_string, hub=hub)
            url: str = sdk.get_client_access_token(roles=["webpubsub.joinLeaveGroup"])["url"]
            async with websockets.connect(url, subprotocols=[JSON_PROTOCOL]) as ws:  # type: ignore[list-item]
                connection_id = (await receive_json(ws))["connectionId"]
                for ack_id, kind in ((1, "joinGroup"), (2, "leaveGroup")):
                    await ws.send(json.dumps({"type": kind, "group": "room", "ackId": ack_id}))
                    assert (await receive_json(ws))["success"] is True
                assert await asyncio.to_thread(done.wait, TIMEOUT)
    assert seen == [("joined", "room", connection_id), ("left", "room", connection_id)]


async def test_metadata_through_the_handler(
    service: ServiceThread, hub: str, asgi_server: ASGIServerThread
) -> None:
    """``UserEventRequest.metadata`` and ``UserEventResponse.with_metadata`` (spec-next 3.5)."""

    def echo(request: UserEventRequest) -> UserEventResponse:
        seen = ",".join(f"{k}={v}" for k, v in sorted(request.metadata.items()))
        if request.context.event_name == "empty":
            return UserEventResponse().with_metadata({"only": "meta"})
        return UserEventResponse.text(seen).with_metadata({"Status": "done"})

    handler = WebPubSubEventHandler(hub, path="/eventhandler", handle_user_event=echo)
    with events_sent_to(service, hub, f"{asgi_server.base_url}/eventhandler/{{event}}"):
        async with (
            asgi_server.use(handler),
            websockets.connect(client_url(service, hub), subprotocols=[JSON_PROTOCOL]) as ws,
        ):  # type: ignore[list-item]
            await receive_json(ws)
            for event in ("e", "empty"):
                frame = {"type": "event", "event": event, "dataType": "text", "data": "x"}
                await ws.send(json.dumps({**frame, "metadata": {"Trace": "1", "b": "2"}}))
                reply = await receive_json(ws)
                if event == "e":
                    assert (reply["data"], reply["metadata"]) == (
                        "b=2,trace=1",
                        {"status": "done"},
                    )
                else:
                    assert (reply["data"], reply["metadata"]) == ("", {"only": "meta"})
    with pytest.raises(ValueError, match="metadata"):
        UserEventResponse.text("x").with_metadata({"k": "a,b"})


class IdentityApp:
    """Answers every user event with who sent it and under which name, as it decoded them."""

    def __init__(self, hub: str) -> None:
        self.seen: list[tuple[str, str | None, str]] = []  # (event, user id, event name)
        self.disconnected_event = threading.Event()
        self.handler = WebPubSubEventHandler(
            hub,
            path="/eventhandler",
            access_keys=[SECONDARY_KEY],
            handle_connect=self.handle_connect,
            handle_user_event=self.handle_user_event,
            on_connected=self.on_connected,
            on_disconnected=self.on_disconnected,
        )

    async def handle_connect(self, request: ConnectRequest) -> None:
        self.seen.append(("connect", request.context.user_id, request.context.event_name))

    async def handle_user_event(self, request: UserEventRequest) -> UserEventResponse:
        context = request.context
        self.seen.append(("user", context.user_id, context.event_name))
        return UserEventResponse.text(f"{context.user_id}|{context.event_name}")

    async def on_connected(self, request: ConnectedRequest) -> None:
        self.seen.append(("connected", request.context.user_id, request.context.event_name))

    async def on_disconnected(self, request: DisconnectedRequest) -> None:
        self.seen.append(("disconnected", request.context.user_id, request.context.event_name))
        self.disconnected_event.set()


@pytest.mark.parametrize("user_id", ["José", "张伟"])
async def test_non_ascii_user_ids_and_event_names_round_trip(
    service: ServiceThread, hub: str, asgi_server: ASGIServerThread, user_id: str
) -> None:
    app = IdentityApp(hub)
    with events_sent_to(service, hub, f"{asgi_server.base_url}/eventhandler/{{event}}"):
        async with asgi_server.use(app.handler):
            sdk = WebPubSubServiceClient.from_connection_string(service.connection_string, hub=hub)
            url = sdk.get_client_access_token(user_id=user_id)["url"]
            async with websockets.connect(url, subprotocols=[JSON_PROTOCOL]) as ws:  # type: ignore[list-item]
                assert (await receive_json(ws))["userId"] == user_id
                await ws.send(
                    json.dumps(
                        {"type": "event", "event": "héllo", "dataType": "text", "data": "hi"}
                    )
                )
                assert (await receive_json(ws))["data"] == f"{user_id}|héllo"
            assert await asyncio.to_thread(app.disconnected_event.wait, TIMEOUT)
    assert sorted(app.seen) == sorted(
        [
            ("connect", user_id, "connect"),
            ("connected", user_id, "connected"),
            ("user", user_id, "héllo"),
            ("disconnected", user_id, "disconnected"),
        ]
    )
