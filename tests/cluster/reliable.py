"""A reliable JSON client on raw sockets for the cluster tests."""

from __future__ import annotations

import json
from typing import Any, Protocol

import websockets
from websockets.asyncio.client import ClientConnection

from webpubsub.auth.tokens import client_audience, mint_client_token

from .conftest import ACCESS_KEY
from .test_cluster import receive

RELIABLE = "json.reliable.webpubsub.azure.v1"
ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


class HasEndpoint(Protocol):
    @property
    def endpoint(self) -> str: ...


class Reliable:
    """A reliable JSON client on raw sockets: it acks what it gets and can drop and come
    back through any node with its reconnection token."""

    def __init__(self, hub: str, user_id: str, key: str = ACCESS_KEY) -> None:
        self.key = key
        self.hub = hub
        self.user_id = user_id
        self.ws: ClientConnection | None = None
        self.connection_id = ""
        self.token = ""
        self.last_sequence = 0
        self.data: list[Any] = []  # the data of every message received, in order

    async def connect(self, node: HasEndpoint) -> dict[str, Any]:
        audience = client_audience(node.endpoint, self.hub)
        access = mint_client_token(self.key, audience, user_id=self.user_id, roles=ROLES)
        url = audience.replace("http://", "ws://") + f"?access_token={access}"
        return await self._open(url)

    async def recover(self, node: HasEndpoint) -> dict[str, Any]:
        url = client_audience(node.endpoint, self.hub).replace("http://", "ws://")
        url += f"?awps_connection_id={self.connection_id}&awps_reconnection_token={self.token}"
        return await self._open(url)

    async def _open(self, url: str) -> dict[str, Any]:
        self.ws = await websockets.connect(url, subprotocols=[RELIABLE])  # type: ignore[list-item]
        connected: dict[str, Any] = await receive(self.ws)
        assert connected["event"] == "connected", connected
        self.connection_id = connected["connectionId"]
        self.token = connected["reconnectionToken"]
        return connected

    def drop(self) -> None:
        """The network fails: no close frame."""
        assert self.ws is not None
        self.ws.transport.abort()

    async def read(self, count: int, timeout: float = 10.0) -> list[Any]:
        """Read until ``count`` more data messages arrived (acking them); the replies
        (acks) met on the way are returned."""
        assert self.ws is not None
        replies: list[Any] = []
        target = len(self.data) + count
        while len(self.data) < target:
            frame = await receive(self.ws, timeout)
            if frame.get("type") == "message":
                await self._take(frame)
            else:
                replies.append(frame)
        return replies

    async def _take(self, frame: dict[str, Any]) -> None:
        assert self.ws is not None
        sequence = frame["sequenceId"]
        if sequence <= self.last_sequence:
            return  # a resend of what we had: the official clients drop these too
        self.last_sequence = sequence
        self.data.append(frame["data"])
        await self.ws.send(json.dumps({"type": "sequenceAck", "sequenceId": sequence}))

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.ws is not None
        await self.ws.send(json.dumps(message))
        while True:
            frame = await receive(self.ws)
            if frame.get("type") == "ack":
                return frame
            if frame.get("type") == "message":
                await self._take(frame)
