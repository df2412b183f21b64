"""A tiny app server for tests: one tunnel socket to ``/server/tunnel`` (socketio spec 4).

It answers the service's CloudEvents with ``handler`` (default: 200 with an empty body, and a
Socket.IO open packet for ``connect``), records them, and sends REST calls as HttpRequest
frames (:meth:`TunnelClient.call`). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ACCESS_KEY
from webpubsub.protocols import tunnel as t

TIMEOUT = 5.0

Handler = Callable[[t.HttpRequest], Awaitable[tuple[int, dict[str, list[str]], bytes]]]


class HasEndpoint(Protocol):
    @property
    def endpoint(self) -> str: ...


def tunnel_url(service: HasEndpoint, hub: str) -> str:
    return service.endpoint.replace("http", "ws", 1).rstrip("/") + f"/server/tunnel?hub={hub}"


def tunnel_token(
    service: HasEndpoint, hub: str, sub: str | None, *, key: str = ACCESS_KEY, **claims: Any
) -> str:
    """The token the SDK signs: ``aud`` = the tunnel URL, ``sub`` = the process's id."""
    body: dict[str, Any] = {"aud": tunnel_url(service, hub), "exp": int(time.time()) + 3600}
    if sub is not None:
        body["sub"] = sub
    body.update(claims)
    return jwt.encode(body, key.encode(), algorithm="HS256")


async def default_handler(request: t.HttpRequest) -> tuple[int, dict[str, list[str]], bytes]:
    if request.headers.get("ce-type") == ["azure.webpubsub.sys.connect"]:
        sid = request.headers["ce-connectionId"][0]
        body = {"socketio": {"sid": sid, "upgrades": [], "pingInterval": 25000}}
        return 200, {"Content-Type": ["application/json"]}, json.dumps(body).encode()
    return 200, {}, b""


@dataclass
class Answer:
    status: int
    headers: dict[str, list[str]]
    frames: list[t.HttpResponse] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(f.content for f in self.frames)


class TunnelClient:
    """One tunnel socket, read by a background task."""

    def __init__(self, ws: ClientConnection, handler: Handler) -> None:
        self.ws = ws
        self.handler = handler
        self.connected: t.ConnectionConnected | None = None
        self.statuses: list[t.ServiceStatus] = []
        self.requests: list[t.HttpRequest] = []  # CloudEvents received, in order
        self.received = asyncio.Event()
        self._next_ack = 0
        self._calls: dict[int, asyncio.Queue[t.HttpResponse]] = {}
        self._ready = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(
        cls,
        service: HasEndpoint,
        hub: str,
        sub: str | None = None,
        handler: Handler = default_handler,
        *,
        key: str = ACCESS_KEY,
    ) -> TunnelClient:
        """A tunnel to ``service`` (a ServiceThread, or a cluster node) for ``hub``."""
        sub = sub or str(uuid.uuid4())
        token = tunnel_token(service, hub, sub, key=key)
        url = f"{tunnel_url(service, hub)}&access_token={token}"
        ws = await connect(url, max_size=None)
        client = cls(ws, handler)
        await asyncio.wait_for(client._ready.wait(), TIMEOUT)
        return client

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for data in self.ws:
                assert isinstance(data, bytes), "the service sent a text frame"
                message = t.decode(data, max_size=1 << 30)
                if isinstance(message, t.ConnectionConnected):
                    self.connected = message
                    self._ready.set()
                elif isinstance(message, t.ServiceStatus):
                    self.statuses.append(message)
                elif isinstance(message, t.HttpResponse):
                    queue = self._calls.get(message.ack_id)
                    if queue is not None:
                        queue.put_nowait(message)
                elif isinstance(message, t.HttpRequest):
                    self.requests.append(message)
                    self.received.set()
                    task = asyncio.get_running_loop().create_task(self._answer(message))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def _answer(self, request: t.HttpRequest) -> None:
        status, headers, body = await self.handler(request)
        response = t.HttpResponse(
            request.ack_id, status, headers, body, False, request.local_routing
        )
        await self.ws.send(t.encode(response))

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send(data)

    async def call(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        content_type: str | None = None,
        *,
        wait: bool = True,
    ) -> Answer:
        """A REST call over the tunnel; the whole (maybe streamed) answer."""
        ack_id = await self.start(method, path, body, content_type)
        return await self.answer(ack_id) if wait else Answer(0, {})

    async def start(
        self, method: str, path: str, body: bytes = b"", content_type: str | None = None
    ) -> int:
        self._next_ack += 1
        ack_id = self._next_ack
        self._calls[ack_id] = asyncio.Queue()
        headers = {"Content-Type": [content_type]} if content_type else {}
        url = f"https://host{path}"
        await self.ws.send(t.encode(t.HttpRequest(ack_id, method, url, headers, body, True)))
        return ack_id

    async def next_frame(self, ack_id: int) -> t.HttpResponse:
        return await asyncio.wait_for(self._calls[ack_id].get(), TIMEOUT)

    async def answer(self, ack_id: int) -> Answer:
        first = await self.next_frame(ack_id)
        answer = Answer(first.status_code, first.headers, [first])
        while answer.frames[-1].not_completed:
            answer.frames.append(await self.next_frame(ack_id))
        del self._calls[ack_id]
        return answer

    async def wait_for(self, predicate: Callable[[t.HttpRequest], bool]) -> t.HttpRequest:
        """The first CloudEvent received (or to come) that satisfies ``predicate``."""
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while True:
            for request in self.requests:
                if predicate(request):
                    return request
            self.received.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            await asyncio.wait_for(self.received.wait(), max(remaining, 0.001))

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        for task in list(self._tasks):
            task.cancel()

    async def __aenter__(self) -> TunnelClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def event_type(request: t.HttpRequest) -> str:
    return request.headers.get("ce-type", [""])[0]
