"""Test helpers for the SDK: a recording HTTP server, WebSocket test clients, and an adapter
that lets one async test body drive both the sync and the asyncio client."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

JSON_SUBPROTOCOL = "json.webpubsub.azure.v1"
TIMEOUT = 5.0


# -- recording server ---------------------------------------------------------------------


@dataclass
class Recorded:
    """One request as the recorder received it."""

    method: str
    target: str  # raw path + query, as sent
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def raw_query(self) -> str:
        return urlsplit(self.target).query

    @property
    def query(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        for key, value in parse_qsl(self.raw_query, keep_blank_values=True):
            result.setdefault(key, []).append(value)
        return result

    @property
    def content_type(self) -> str | None:
        return self.headers.get("content-type")

    @property
    def bearer(self) -> str:
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        assert scheme == "Bearer", self.headers
        return token

    def claims(self, key: str | None = None) -> dict[str, Any]:
        token = self.bearer
        if key is None:
            return jwt.decode(token, options={"verify_signature": False})
        return jwt.decode(token, key.encode(), algorithms=["HS256"], options={"verify_aud": False})


@dataclass
class Reply:
    """A scripted answer; ``drop`` closes the socket without answering."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    drop: bool = False


def default_reply(method: str, target: str) -> Reply:
    """What the recorder of ``official-sdk-requests.md`` answered."""
    path = urlsplit(target).path
    if path.endswith("/:send"):
        return Reply(202)
    if method == "HEAD":
        return Reply(404 if "missing" in path else 200)
    if method == "DELETE" or path.endswith("/:closeConnections"):
        return Reply(204)
    if method == "GET" and path.endswith("/connections"):
        page = {"value": [{"connectionId": "conn-1", "userId": "user-1"}]}
        return Reply(200, {"Content-Type": "application/json"}, json.dumps(page).encode())
    return Reply(200)


class Recorder:
    """A loopback HTTP server that records requests and answers from a script.

    ``script`` replies are used first, in order; then ``default_reply``.
    """

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: list[Any] = []  # Reply, or a function of the request returning one
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                request = Recorded(self.command, self.path, headers, body)
                reply = recorder._next(request)
                if reply.drop:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )

    def _next(self, request: Recorded) -> Reply:
        with self._lock:
            self.requests.append(request)
            step = self.script.pop(0) if self.script else None
        if step is None:
            return default_reply(request.method, request.target)
        reply: Reply = step(request) if callable(step) else step
        return reply

    def start(self) -> Recorder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def last(self) -> Recorded:
        return self.requests[-1]


# -- sync client driven from async tests ---------------------------------------------------


class SyncAsAsync:
    """Wraps a sync client (or group) so its calls are awaited like the asyncio client's.

    Each call runs in a worker thread, so the test's event loop (and the WebSocket clients on
    it) keep running while the sync SDK blocks.
    """

    def __init__(self, target: Any) -> None:
        self._target = target

    def group(self, name: str) -> SyncAsAsync:
        return SyncAsAsync(self._target.group(name))

    def list_connections(self, **kwargs: Any) -> AsyncIterator[Any]:
        iterator = self._target.list_connections(**kwargs)  # validates eagerly, like aio

        async def members() -> AsyncIterator[Any]:
            items = await asyncio.to_thread(list, iterator)
            for item in items:
                yield item

        return members()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(attr, *args, **kwargs)

        return call


async def collect(iterator: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in iterator]


# -- WebSocket test clients ----------------------------------------------------------------


class WsClient:
    """A ``json.webpubsub.azure.v1`` client connected with a token from the SDK."""

    def __init__(self, ws: ClientConnection, connected: dict[str, Any]) -> None:
        self.ws = ws
        self.connection_id: str = connected["connectionId"]
        self.user_id: str | None = connected.get("userId")

    @classmethod
    async def connect(cls, client: Any, **token_args: Any) -> WsClient:
        token = await client.get_client_access_token(**token_args)
        ws = await connect(token["url"], subprotocols=[JSON_SUBPROTOCOL])  # type: ignore[list-item]
        connected = await cls._recv(ws)
        assert connected.get("event") == "connected", connected
        return cls(ws, connected)

    @staticmethod
    async def _recv(ws: ClientConnection, timeout: float = TIMEOUT) -> dict[str, Any]:
        frame = await asyncio.wait_for(ws.recv(), timeout)
        parsed: dict[str, Any] = json.loads(frame)
        return parsed

    async def receive(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next message (skipping nothing): a ``message`` or ``system`` envelope."""
        return await self._recv(self.ws, timeout)

    async def wait_closed(self, timeout: float = TIMEOUT) -> str | None:
        """Wait for the service to close the socket; returns the ``disconnected`` reason."""
        reason = None
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                message = await self._recv(self.ws, deadline - time.monotonic())
                if message.get("event") == "disconnected":
                    reason = message.get("message")
        except (ConnectionClosed, TimeoutError):
            pass
        await asyncio.wait_for(self.ws.wait_closed(), max(0.1, deadline - time.monotonic()))
        return reason

    async def close(self) -> None:
        await self.ws.close()


async def poll(predicate: Callable[[], Any], timeout: float = TIMEOUT) -> None:
    """Await an async predicate until it is truthy (bounded by a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.01)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
