"""Helpers for the event handler tests: CloudEvents requests as the service sends them, and
real servers (uvicorn for ASGI, wsgiref for WSGI) on free loopback ports.

The requests are built here from spec section 5, independently of ``webpubsub.handler``, so
the tests check the handler against the spec rather than against itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, Literal
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import WSGIApplication

import httpx
import uvicorn

from webpubsub.core.events import EventHandlerSettings, HubSettings
from webpubsub.testing import ServiceThread

HUB = "chat"
CONNECTION_ID = "LW61bMG2VQLIMYIVBMmyXgb3c418200"
ORIGIN = "127.0.0.1"
KEY = "handler-test-key-0123456789abcdefghijklmnop"
OTHER_KEY = "handler-other-key-0123456789abcdefghijklmn"
TIMEOUT = 5.0
"""Upper bound for one HTTP exchange or one expected frame; never a fixed wait."""

SYSTEM_EVENTS = ("connect", "connected", "disconnected")


def signature(connection_id: str, *keys: str) -> str:
    """``ce-signature`` as spec 5.4 defines it: ``sha256=<hex>`` per key, comma-separated."""
    return ",".join(
        "sha256=" + hmac.new(k.encode(), connection_id.encode(), hashlib.sha256).hexdigest()
        for k in keys
    )


def encode_state(states: Mapping[str, Any]) -> str:
    """The SDK convention for ``ce-connectionState``: base64 of a JSON object (spec 5.9)."""
    return base64.b64encode(json.dumps(dict(states)).encode()).decode()


def decode_state(value: str) -> Any:
    return json.loads(base64.b64decode(value))


def ce_headers(
    event: str,
    *,
    hub: str = HUB,
    connection_id: str = CONNECTION_ID,
    user_id: str | None = "user1",
    keys: tuple[str, ...] = (KEY,),
    subprotocol: str | None = None,
    state: str | None = None,
    content_type: str | None = None,
    origin: str = ORIGIN,
    event_id: str = "1",
) -> dict[str, str]:
    """The headers of one CloudEvents request in binary mode (spec 5.3)."""
    system = event in SYSTEM_EVENTS
    headers = {
        "WebHook-Request-Origin": origin,
        "ce-specversion": "1.0",
        "ce-awpsversion": "1.0",
        "ce-type": f"azure.webpubsub.{'sys' if system else 'user'}.{event}",
        "ce-source": f"/hubs/{hub}/client/{connection_id}",
        "ce-id": event_id,
        "ce-time": "2024-01-01T00:00:00Z",
        "ce-hub": hub,
        "ce-connectionId": connection_id,
        "ce-eventName": event,
        "Content-Type": content_type
        or ("application/json; charset=utf-8" if system else "text/plain"),
    }
    if keys:
        headers["ce-signature"] = signature(connection_id, *keys)
    if user_id is not None:
        headers["ce-userId"] = user_id
    if subprotocol is not None and event != "connect":
        headers["ce-subprotocol"] = subprotocol
    if state is not None:
        headers["ce-connectionState"] = state
    return headers


def connect_body(
    *,
    claims: Mapping[str, list[str]] | None = None,
    query: Mapping[str, list[str]] | None = None,
    subprotocols: list[str] | None = None,
    certificates: list[dict[str, str]] | None = None,
) -> bytes:
    """A ``connect`` body (spec 5.5): every map is string -> string[]."""
    return json.dumps(
        {
            "claims": dict(claims or {"sub": ["user1"], "role": ["webpubsub.sendToGroup"]}),
            "query": dict(query or {"access_token": ["<jwt>"]}),
            "headers": {"Host": ["localhost:8080"], "Sec-WebSocket-Protocol": ["a, b"]},
            "subprotocols": subprotocols if subprotocols is not None else [],
            "clientCertificates": certificates or [],
        }
    ).encode()


def preflight_headers(origin: str = ORIGIN) -> dict[str, str]:
    """The abuse-protection ``OPTIONS`` request headers (spec 5.2)."""
    return {"WebHook-Request-Origin": origin, "ce-awpsversion": "1.0"}


def free_socket() -> socket.socket:
    """A listening socket on a free loopback port: clients may connect at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@contextlib.asynccontextmanager
async def serve_asgi(
    app: Any, *, lifespan: Literal["auto", "on", "off"] = "auto"
) -> AsyncIterator[httpx.AsyncClient]:
    """Run ``app`` under uvicorn on this event loop; yield a client for its base URL.

    The socket listens before uvicorn starts, so requests can go out at once (they wait in the
    backlog): no polling for readiness.
    """
    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan=lifespan)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT
        ) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, TIMEOUT)
        sock.close()


class ASGIServerThread:
    """One uvicorn server in a daemon thread whose app each test swaps in (``use``).

    Starting uvicorn costs a few hundred milliseconds (its main loop polls for shutdown), so
    the tests share one server and install their own handler on it; ``serve_asgi`` is for
    the few tests that need a fresh server (lifespan).
    """

    def __init__(self) -> None:
        self.app: Any = None
        self._sock = free_socket()
        self.base_url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        config = uvicorn.Config(
            self._dispatch, interface="asgi3", log_config=None, access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    async def _dispatch(self, scope: Any, receive: Any, send: Any) -> None:
        app = self.app
        if app is None:
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": b"no app installed"})
            return
        await app(scope, receive, send)

    @contextlib.asynccontextmanager
    async def use(self, app: Any) -> AsyncIterator[httpx.AsyncClient]:
        """Serve ``app`` for the duration; yield a client for it."""
        self.app = app
        try:
            async with httpx.AsyncClient(base_url=self.base_url, timeout=TIMEOUT) as client:
                yield client
        finally:
            self.app = None

    def __enter__(self) -> ASGIServerThread:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(TIMEOUT)
        self._sock.close()


@contextlib.contextmanager
def events_sent_to(
    service: ServiceThread, hub: str, url_template: str, **options: Any
) -> Iterator[None]:
    """Point ``hub`` of the running service at an event handler URL for the duration;
    ``options`` are more ``EventHandlerSettings`` fields."""
    settings = HubSettings((EventHandlerSettings(url_template, **options),))
    service.call(lambda: service.settings.hubs.__setitem__(hub.lower(), settings))
    try:
        yield
    finally:
        service.call(lambda: service.settings.hubs.pop(hub.lower(), None))


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve_wsgi(app: WSGIApplication) -> Iterator[httpx.Client]:
    """Run ``app`` under the stdlib WSGI server in a thread; yield a client for it."""
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{server.server_port}", timeout=TIMEOUT
        ) as client:
            yield client
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


class Recorder:
    """Handler functions that record the requests they get and answer what they are told."""

    def __init__(self) -> None:
        self.requests: list[Any] = []
        self.answer: Any = None
        self.error: BaseException | None = None

    async def __call__(self, request: Any) -> Any:
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        return self.answer

    @property
    def last(self) -> Any:
        assert self.requests, "the handler was not called"
        return self.requests[-1]
