"""The service calling the official @azure/web-pubsub-express handler (a foreign app side).

If our CloudEvents (headers, abuse-protection OPTIONS, connect body, state) were off, the
express handler would ignore the requests and the client would see it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import websockets

from tests.conftest import ACCESS_KEY
from tests.nodejs import JsError, NodeDriver
from webpubsub.auth.tokens import client_audience, mint_client_token
from webpubsub.core.events import EventHandlerSettings, HubSettings
from webpubsub.testing import ServiceThread

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
pytestmark = pytest.mark.skipif(
    shutil.which("node") is None
    or not (NODE_DIR / "node_modules" / "@azure" / "web-pubsub-express").exists(),
    reason="node or tests/node/node_modules is missing (run: cd tests/node && npm ci)",
)


class ExpressApp:
    """A Node script of tests/node hosting @azure/web-pubsub-express; JSON lines out."""

    def __init__(self, hub: str, script: str = "express_handler.mjs") -> None:
        self.process = subprocess.Popen(
            ["node", str(NODE_DIR / script), hub],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self.next_line(10)["port"])

    def next_line(self, timeout: float = 10.0) -> Any:
        assert self.process.stdout is not None
        # Reading a line blocks; bound it with a watchdog that kills a stuck process.
        timer = threading.Timer(timeout, self.process.kill)
        timer.start()
        try:
            line = self.process.stdout.readline()
        finally:
            timer.cancel()
        assert line, "the express app exited before answering"
        return json.loads(line)

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture
def presence() -> tuple[str, ...]:
    """The handler's ``group_presence_events``; none unless a test asks."""
    return ()


@pytest.fixture
def express(service: ServiceThread, hub: str, presence: tuple[str, ...]) -> Iterator[ExpressApp]:
    app = ExpressApp(hub.lower())
    template = f"http://127.0.0.1:{app.port}/eventhandler/{{event}}"
    settings = HubSettings((EventHandlerSettings(template, group_presence_events=presence),))
    service.call(lambda: service.settings.hubs.__setitem__(hub.lower(), settings))
    try:
        yield app
    finally:
        app.close()


def url(service: ServiceThread, hub: str, name: str | None, **claims: Any) -> str:
    audience = client_audience(service.endpoint, hub)
    token = mint_client_token(ACCESS_KEY, audience, **claims)
    query = f"?access_token={token}" + (f"&name={name}" if name is not None else "")
    return audience.replace("http://", "ws://") + query


async def test_chat_through_the_express_handler(
    service: ServiceThread, hub: str, express: ExpressApp
) -> None:
    async with websockets.connect(
        url(service, hub, "alice"),
        subprotocols=["json.webpubsub.azure.v1"],  # type: ignore[list-item]
    ) as ws:
        connected = json.loads(await ws.recv())
        assert connected["userId"] == "alice"
        assert await asyncio.to_thread(express.next_line) == {
            "event": "connected",
            "userId": "alice",
            "rawUserId": "alice",
            "connectionId": connected["connectionId"],
            "count": 100,  # set by handleConnect's res.setState
        }
        assert service.call(lambda: service.service.node.group_exists(hub.lower(), "room"))
        for ack_id, expected in ((1, "express:hi:101"), (2, "express:hi:102")):
            await ws.send(
                json.dumps(
                    {
                        "type": "event",
                        "event": "chat",
                        "ackId": ack_id,
                        "dataType": "text",
                        "data": "hi",
                    }
                )
            )
            reply = json.loads(await ws.recv())
            assert reply == {
                "type": "message",
                "from": "server",
                "dataType": "text",
                "data": expected,
            }
            assert json.loads(await ws.recv()) == {"type": "ack", "ackId": ack_id, "success": True}
        await ws.send(
            json.dumps(
                {"type": "event", "event": "json", "ackId": 3, "dataType": "json", "data": {"x": 1}}
            )
        )
        reply = json.loads(await ws.recv())
        assert reply["dataType"] == "json"
        assert reply["data"] == {"echo": {"x": 1}, "count": 103}
    disconnected = await asyncio.to_thread(express.next_line)
    assert disconnected["event"] == "disconnected"
    assert disconnected["userId"] == "alice"


async def test_express_refusal_reaches_the_client(
    service: ServiceThread, hub: str, express: ExpressApp
) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url(service, hub, "intruder"))
    assert refused.value.response.status_code == 401


@pytest.mark.parametrize("user_id", ["José", "张伟"])
async def test_non_ascii_ids_and_event_names_through_the_express_handler(
    service: ServiceThread, hub: str, express: ExpressApp, user_id: str
) -> None:
    """Non-ASCII attributes arrive percent-encoded; express passes them through, the app
    decodes them with decodeURIComponent (see docs/compatibility.md)."""
    async with websockets.connect(
        url(service, hub, None, user_id=user_id),
        subprotocols=["json.webpubsub.azure.v1"],  # type: ignore[list-item]
    ) as ws:
        connected = json.loads(await ws.recv())
        assert connected["userId"] == user_id
        line = await asyncio.to_thread(express.next_line)
        assert line["userId"] == user_id
        assert line["rawUserId"] == quote(user_id)  # what express 1.1.0 hands to the app
        await ws.send(
            json.dumps(
                {"type": "event", "event": "héllo", "ackId": 1, "dataType": "text", "data": "x"}
            )
        )
        reply = json.loads(await ws.recv())
        assert reply["data"] == f"{user_id}|héllo", reply
        assert json.loads(await ws.recv()) == {"type": "ack", "ackId": 1, "success": True}
    disconnected = await asyncio.to_thread(express.next_line)
    assert disconnected == {"event": "disconnected", "userId": user_id, "reason": ""}


@pytest.mark.parametrize("presence", [("joined", "left")])
async def test_group_presence_reaches_on_group_joined_and_left(
    service: ServiceThread, hub: str, express: ExpressApp
) -> None:
    """express 1.1.0 calls onGroupJoined/onGroupLeft for our joined/left events (spec-next 6)."""
    async with websockets.connect(
        url(service, hub, "alice"),
        subprotocols=["json.webpubsub.azure.v1"],  # type: ignore[list-item]
    ) as ws:
        connection_id = json.loads(await ws.recv())["connectionId"]
        frames = [
            {"type": "joinGroup", "group": "extra"},
            {"type": "joinGroup", "group": "extra"},  # already a member: no event
            {"type": "leaveGroup", "group": "extra"},
        ]
        for ack_id, frame in enumerate(frames, start=1):
            await ws.send(json.dumps({**frame, "ackId": ack_id}))
            assert json.loads(await ws.recv()) == {"type": "ack", "ackId": ack_id, "success": True}
    lines = []
    while not lines or lines[-1]["event"] != "disconnected":
        lines.append(await asyncio.to_thread(express.next_line))
    assert lines[0]["event"] == "connected"
    presence = sorted(
        (line["event"], line["group"]) for line in lines if line["event"] in ("joined", "left")
    )
    # "room" came with the connect answer and was left when the connection ended.
    assert presence == [
        ("joined", "extra"),
        ("joined", "room"),
        ("left", "extra"),
        ("left", "room"),
    ]
    assert {line["connectionId"] for line in lines if line["event"] in ("joined", "left")} == {
        connection_id
    }


async def test_js_client_invocations_through_the_express_handler(
    service: ServiceThread, hub: str, express: ExpressApp
) -> None:
    """``invokeEvent`` of @azure/web-pubsub-client 1.1.0 answered by express's
    ``handleUserEvent`` (spec-next 1): payloads, state, and a refusal."""
    driver = NodeDriver("client.mjs")
    try:
        driver.request("start", client="a", url=url(service, hub, "alice"), protocol="json")
        driver.wait_for(lambda line: line.get("event") == "connected", "connected")
        result = driver.request(
            "call", client="a", method="invokeEvent", args=["json", {"orderId": 1}, "json"]
        )
        assert result == {
            "invocationId": "1",
            "dataType": "json",
            "data": {"echo": {"orderId": 1}, "count": 101},
        }
        result = driver.request(
            "call", client="a", method="invokeEvent", args=["chat", "hi", "text"]
        )
        assert (result["dataType"], result["data"]) == ("text", "express:hi:102")  # state kept
        with pytest.raises(JsError) as refused:
            driver.request("call", client="a", method="invokeEvent", args=["fail", "x", "text"])
        assert refused.value.error["errorDetail"] == {"name": "BadRequest", "message": "bad input"}
        # The connection is unharmed, and no server-message was sent for the invocations.
        result = driver.request("call", client="a", method="invokeEvent", args=["who", "x", "text"])
        assert result["data"] == "alice|who"
        assert driver.unread(lambda line: line.get("event") == "server-message") == []
    finally:
        driver.close()
