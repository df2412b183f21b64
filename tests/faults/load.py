"""A steady REST load and clients that count what they receive, for the fault tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection

from tests.cluster.conftest import ACCESS_KEY, Node
from webpubsub.auth.tokens import client_audience, mint_client_token, mint_rest_token

API = "api-version=2024-12-01"


@dataclass
class Receiver:
    """A JSON-subprotocol client that records the ``i`` of every data message it gets."""

    node: Node
    ws: ClientConnection
    connection_id: str
    got: Counter[int] = field(default_factory=Counter)
    task: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for raw in self.ws:
                message = json.loads(raw)
                if message.get("type") == "message":
                    self.got[message["data"]["i"]] += 1
                    if "sequenceId" in message:  # a reliable subprotocol: acknowledge
                        ack = {"type": "sequenceAck", "sequenceId": message["sequenceId"]}
                        await self.ws.send(json.dumps(ack))

    async def has(self, ids: set[int], timeout: float = 20.0) -> set[int]:
        """Wait until every id arrived (or the timeout); return the missing ones."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            missing = ids - set(self.got)
            if not missing:
                return set()
            await asyncio.sleep(0.05)
        return ids - set(self.got)


async def receiver(
    node: Node, hub: str, user: str, protocol: str = "json.webpubsub.azure.v1"
) -> Receiver:
    token = mint_client_token(ACCESS_KEY, client_audience(node.endpoint, hub), user_id=user)
    url = f"ws://127.0.0.1:{node.port}/client/hubs/{hub}?access_token={token}"
    ws = await websockets.connect(url, subprotocols=[protocol])  # type: ignore[list-item]
    connected = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert connected["event"] == "connected"
    found = Receiver(node, ws, connected["connectionId"])
    found.task = asyncio.create_task(found._read())
    return found


async def rest(
    http: httpx.AsyncClient, node: Node, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    """One REST call to a node, signed for its path."""
    url = f"{node.endpoint}{path}"
    token = mint_rest_token(ACCESS_KEY, url)
    sep = "&" if "?" in path else "?"
    return await http.request(
        method, f"{url}{sep}{API}", headers={"Authorization": f"Bearer {token}"}, **kwargs
    )


@dataclass
class Load:
    """Numbered sends to a hub through several nodes, each answer recorded."""

    hub: str
    nodes: list[Node]
    accepted: set[int] = field(default_factory=set)
    refused: Counter[int] = field(default_factory=Counter)  # status -> count
    unknown: int = 0  # no answer (timeout, connection error)
    next_id: int = 0
    accepted_at: list[float] = field(default_factory=list)
    via: dict[int, str] = field(default_factory=dict)  # accepted id -> the node that took it
    refused_at: list[float] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, senders: int = 3) -> None:
        for n in range(senders):
            self._tasks.append(asyncio.create_task(self._send(self.nodes[n % len(self.nodes)])))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _send(self, node: Node) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while not self._stop.is_set():
                self.next_id += 1
                i = self.next_id
                try:
                    response = await rest(
                        http, node, "POST", f"/api/hubs/{self.hub}/:send", json={"i": i}
                    )
                except httpx.HTTPError:
                    self.unknown += 1
                    await asyncio.sleep(0.05)
                    continue
                if response.status_code == 202:
                    self.accepted.add(i)
                    self.via[i] = node.endpoint
                    self.accepted_at.append(time.monotonic())
                else:
                    self.refused[response.status_code] += 1
                    self.refused_at.append(time.monotonic())
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.005)

    async def accepted_since(self, moment: float, count: int, timeout: float = 30.0) -> float:
        """Wait until ``count`` sends were accepted after ``moment``; return the first's time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            after = [t for t in self.accepted_at if t > moment]
            if len(after) >= count:
                return after[0]
            await asyncio.sleep(0.05)
        raise AssertionError(f"fewer than {count} sends accepted in {timeout} s after the fault")

    async def recovered(self, moment: float, count: int, timeout: float = 30.0) -> float:
        """Wait until sends were refused after ``moment`` and then ``count`` accepted after
        the last refusal; return the time of the first of those."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            refused = [t for t in self.refused_at if t > moment]
            if refused:
                after = [t for t in self.accepted_at if t > refused[-1]]
                if len(after) >= count:
                    return after[0]
            await asyncio.sleep(0.05)
        raise AssertionError(f"REST did not refuse and then accept {count} sends in {timeout} s")
