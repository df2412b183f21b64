"""Helpers for the client's end-to-end tests against a real service.

* :class:`Recorder` keeps every event of a client and lets a test await the next one of a
  kind (tests never sleep: they await what they expect, with a deadline of ``TIMEOUT``);
* :func:`drop_client_side` / :func:`drop_server_side` cut a client's TCP connection without
  a closing handshake, from either end;
* :class:`Proxy` sits between clients and the service to partition the network: ``cut``
  kills every connection and refuses new ones until ``heal``; ``freeze`` silences the
  current connections without closing them (a half-open link).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from webpubsub.auth.tokens import client_audience, client_url, mint_client_token
from webpubsub.client import WebPubSubClient
from webpubsub.client._events import EVENT_TYPES
from webpubsub.testing import ServiceThread

TIMEOUT = 10.0
"""Upper bound for one expected effect; never a fixed wait."""

ALL_ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")
PROTOCOLS = [
    "json.reliable.webpubsub.azure.v1",
    "json.webpubsub.azure.v1",
    "protobuf.reliable.webpubsub.azure.v1",
    "protobuf.webpubsub.azure.v1",
]
RELIABLE = [p for p in PROTOCOLS if ".reliable." in p]

E = TypeVar("E")


def access_url(
    service: ServiceThread,
    hub: str,
    user_id: str | None = "alice",
    roles: tuple[str, ...] | list[str] = ALL_ROLES,
    *,
    endpoint: str | None = None,
    **claims: Any,
) -> str:
    """A client access URL for ``hub`` (``endpoint`` replaces the host, e.g. a proxy's)."""
    token = mint_client_token(
        service.access_key,
        client_audience(service.endpoint, hub),
        user_id=user_id,
        roles=roles,
        **claims,
    )
    return f"{client_url(endpoint or service.endpoint, hub)}?access_token={token}"


class Recorder:
    """Every event a client fires, in order; ``next(kind)`` awaits the next unread one."""

    def __init__(self, client: WebPubSubClient) -> None:
        self.events: list[Any] = []
        self._read: dict[type[Any], int] = {}
        self._changed = asyncio.Event()
        for name in EVENT_TYPES:
            client.on(name, self._record)  # type: ignore[call-overload]

    def _record(self, event: Any) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    async def next(self, kind: type[E], timeout: float = TIMEOUT) -> E:
        """The next event of ``kind`` not returned before."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    seen = self._read.get(kind, 0)
                    found = self.of(kind)
                    if len(found) > seen:
                        self._read[kind] = seen + 1
                        return found[seen]
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            names = [type(e).__name__ for e in self.events]
            raise AssertionError(f"no {kind.__name__} in {TIMEOUT} s; got {names}") from None

    async def messages(self, kind: type[E], count: int) -> list[E]:
        """The next ``count`` unread events of ``kind``."""
        return [await self.next(kind) for _ in range(count)]

    async def until(self, kind: type[E], predicate: Callable[[E], bool]) -> E:
        """Read events of ``kind`` until one matches; returns it."""
        while not predicate(event := await self.next(kind)):
            pass
        return event


def drop_client_side(client: WebPubSubClient) -> None:
    """Abort the client's TCP connection (no close frame): a network failure."""
    socket = client._socket
    assert socket is not None, "the client has no socket"
    socket.abort()


def drop_server_side(service: ServiceThread, connection_id: str) -> None:
    """Abort the service's end of a client's TCP connection."""

    def abort() -> None:
        for proto in list(service.service.protocols):
            conn = proto.conn
            if conn is not None and conn.connection_id == connection_id and conn.transport is proto:
                assert proto.transport is not None
                proto.transport.abort()
                return
        raise AssertionError(f"no socket for {connection_id}")

    service.call(abort)


def on_service_disconnect(service: ServiceThread, connection_id: str) -> threading.Event:
    """An event set when the service ends the logical connection ``connection_id``."""
    ended = threading.Event()

    def hook(conn: Any, reason: str) -> None:
        if conn.connection_id == connection_id:
            ended.set()

    service.call(lambda: service.service.node.on_disconnected.append(hook))
    return ended


async def wait_threading_event(event: threading.Event, timeout: float = TIMEOUT) -> None:
    assert await asyncio.to_thread(event.wait, timeout), "the service never did it"


class Proxy:
    """A TCP proxy to the service whose links a test can cut, freeze and heal."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.blocked = False
        self.frozen = False
        self._links: set[asyncio.Transport] = set()
        self._server: asyncio.Server | None = None
        self._frozen_links: list[Callable[[], None]] = []

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    def cut(self) -> None:
        """Kill every link and refuse new ones until :meth:`heal`."""
        self.blocked = True
        for transport in list(self._links):
            transport.abort()

    def heal(self) -> None:
        self.blocked = False
        self.frozen = False

    def freeze(self) -> None:
        """Stop moving bytes on the current links, without closing them."""
        self.frozen = True

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._links.update((writer.transport, up_writer.transport))  # type: ignore[arg-type]
        frozen_at_start = self.frozen
        await asyncio.gather(
            self._pipe(reader, up_writer, frozen_at_start),
            self._pipe(up_reader, writer, frozen_at_start),
            return_exceptions=True,
        )
        self._links.difference_update((writer.transport, up_writer.transport))  # type: ignore[arg-type]

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, frozen_at_start: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if self.frozen and not frozen_at_start:
                    continue  # swallowed: the link looks alive but carries nothing
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()
