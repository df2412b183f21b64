"""Interop with the official JS client: one chat room, webpubsub.client on one side and
``@azure/web-pubsub-client`` (``tests/node/interop_chat.mjs``) on the other.

The scenario is the seed's chat: an app server hands out client access URLs (one user each)
and broadcasts to the room with the server SDK; clients join the room and talk, every data
type, both ways, across protocols, and across a dropped connection.

Skipped without ``node`` or without ``tests/node/node_modules`` (``make install``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.client.helpers import RELIABLE, TIMEOUT, Recorder, drop_client_side
from webpubsub.aio import WebPubSubServiceClient
from webpubsub.client import ConnectedEvent, DataType, GroupMessage, WebPubSubClient
from webpubsub.testing import ServiceThread

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
NODE = shutil.which("node")
ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
PYTHON_PROTOCOLS = ["json.reliable.webpubsub.azure.v1", "protobuf.webpubsub.azure.v1"]

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.skipif(
        not (NODE_DIR / "node_modules").is_dir(),
        reason="tests/node/node_modules is missing: run `npm ci` in tests/node",
    ),
]

Line = dict[str, Any]


def from_wire(value: Any) -> Any:
    """The reverse of common.mjs toWire: {"$binary": base64} becomes bytes."""
    if isinstance(value, dict):
        if set(value) == {"$binary"}:
            return base64.b64decode(value["$binary"])
        return {k: from_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    return value


def to_wire(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$binary": base64.b64encode(value).decode()}
    return value


class ChatPeer:
    """``interop_chat.mjs`` in a subprocess, spoken to in JSON lines (see common.mjs)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[Line] = []
        self._read: set[int] = set()
        self._changed = asyncio.Event()
        self._ids = itertools.count(1)
        self._reader = asyncio.ensure_future(self._read_lines())

    @classmethod
    @contextlib.asynccontextmanager
    async def run(cls) -> AsyncIterator[ChatPeer]:
        assert NODE is not None
        process = await asyncio.create_subprocess_exec(
            NODE,
            "interop_chat.mjs",
            cwd=NODE_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        peer = cls(process)
        try:
            await peer.wait_for(lambda line: line.get("type") == "ready")
            yield peer
        finally:
            assert process.stdin is not None
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), TIMEOUT)
            except TimeoutError:
                process.kill()
                await process.wait()
            peer._reader.cancel()

    async def _read_lines(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append(from_wire(json.loads(raw)))
            self._changed.set()

    async def wait_for(self, predicate: Callable[[Line], bool]) -> Line:
        """The first unread line that matches."""
        try:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    for index, line in enumerate(self.lines):
                        if index not in self._read and predicate(line):
                            self._read.add(index)
                            return line
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"the JS client never did it; it said {self.lines}") from None

    async def call(self, op: str, **params: Any) -> Any:
        assert self.process.stdin is not None
        command_id = next(self._ids)
        command = {"id": command_id, "op": op, **{k: to_wire(v) for k, v in params.items()}}
        self.process.stdin.write(json.dumps(command).encode() + b"\n")
        await self.process.stdin.drain()
        result = await self.wait_for(
            lambda line: line.get("type") == "result" and line.get("id") == command_id
        )
        if not result["ok"]:
            raise AssertionError(f"JS {op} failed: {result['error']}")
        return result["value"]

    async def next_message(self, *, not_from: str | None = None) -> Line:
        """The next group message, skipping those of user ``not_from`` (its own echoes)."""
        return await self.wait_for(
            lambda line: (
                line.get("type") == "event"
                and line.get("event") == "group-message"
                and (not_from is None or line.get("fromUserId") != not_from)
            )
        )


@pytest.fixture
async def app_server(service: ServiceThread, hub: str) -> AsyncIterator[WebPubSubServiceClient]:
    async with WebPubSubServiceClient.from_connection_string(
        service.connection_string, hub=hub
    ) as client:
        yield client


async def url_for(app_server: WebPubSubServiceClient, user_id: str) -> str:
    token = await app_server.get_client_access_token(user_id=user_id, roles=ROLES)
    return str(token["url"])


@pytest.mark.parametrize("protocol", PYTHON_PROTOCOLS)
async def test_chat_with_the_js_client(app_server: WebPubSubServiceClient, protocol: str) -> None:
    async with ChatPeer.run() as bob:
        await bob.call("start", url=await url_for(app_server, "bob"), group="room")
        alice = WebPubSubClient(lambda: url_for(app_server, "alice"), protocol=protocol)
        inbox = Recorder(alice)
        async with alice:
            await alice.join_group("room")

            # Python -> JS, every data type the JS client reads.
            said: list[tuple[Any, str]] = [
                ("hello bob", "text"),
                ({"text": "hi", "emoji": "👋"}, "json"),
                (b"\x00\xffbinary", "binary"),
            ]
            for data, data_type in said:
                await alice.send_to_group("room", data, data_type, no_echo=True)
                heard = await bob.next_message(not_from="bob")
                assert heard["group"] == "room"
                assert (heard["dataType"], heard["data"]) == (data_type, data)
                assert heard["fromUserId"] == "alice"  # bob speaks JSON, which carries it

            # JS -> Python.
            for data, data_type in said:
                result = await bob.call("say", data=data, dataType=data_type)
                assert result["isDuplicated"] is False
                heard_py = await inbox.next(GroupMessage)
                assert (heard_py.data, heard_py.data_type) == (data, DataType(data_type))
                if protocol.startswith("json"):
                    assert heard_py.from_user_id == "bob"

            # The app server speaks to the room: both hear it.
            await app_server.group("room").send_to_all({"from": "app"})
            assert (await bob.next_message(not_from="bob"))["data"] == {"from": "app"}
            assert (await inbox.next(GroupMessage)).data == {"from": "app"}


@pytest.mark.parametrize("protocol", RELIABLE)
async def test_chat_survives_dropped_connections_on_both_sides(
    app_server: WebPubSubServiceClient, protocol: str
) -> None:
    async with ChatPeer.run() as bob:
        await bob.call("start", url=await url_for(app_server, "bob"), group="room")
        alice = WebPubSubClient(await url_for(app_server, "alice"), protocol=protocol)
        inbox = Recorder(alice)
        async with alice:
            await alice.join_group("room")
            for i in range(6):
                if i == 2:
                    drop_client_side(alice)
                if i == 4:
                    await bob.call("dropSocket")
                await bob.call("say", data=f"js {i}", dataType="text")
                await alice.send_to_group("room", f"py {i}", "text")
            heard_py = [m.data for m in await inbox.messages(GroupMessage, 12)]
            heard_js = [(await bob.next_message())["data"] for _ in range(12)]
        expected_from_js = [f"js {i}" for i in range(6)]
        expected_from_py = [f"py {i}" for i in range(6)]
        assert [d for d in heard_py if d.startswith("js")] == expected_from_js
        assert [d for d in heard_py if d.startswith("py")] == expected_from_py
        assert [d for d in heard_js if d.startswith("js")] == expected_from_js
        assert [d for d in heard_js if d.startswith("py")] == expected_from_py
        assert len(inbox.of(ConnectedEvent)) == 1  # recovered, not reconnected
        assert len(inbox.of(GroupMessage)) == 12  # and nothing twice
