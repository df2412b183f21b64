"""Recording test clients: WebSocket clients that keep everything the service sends them.

A :class:`RecordingClient` on a PubSub subprotocol is a :class:`webpubsub.client.WebPubSubClient`
(reconnection and recovery turned off, so a closed connection stays closed) whose events are
recorded; a simple client (no subprotocol) is a plain ``websockets`` connection whose frames are
recorded. Tests wait for the next message with ``await client.receive(timeout=...)`` instead of
sleeping. :class:`ClientFactory` mints client access tokens with the connection string's key and
connects clients, closing them all at the end of a test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeAlias

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ..client import AckError as AckError  # re-exported: refused requests raise it
from ..client import (
    AckResult,
    ClientStoppedError,
    ConnectedEvent,
    ConnectError,
    DisconnectedEvent,
    WebPubSubClient,
)
from ..core.message import DataType
from ..protocols.downstream import (
    Connected,
    Disconnected,
    Downstream,
    GroupMessage,
    Payload,
    ServerMessage,
)
from ..sdk import WebPubSubServiceClient

JSON = "json.webpubsub.azure.v1"
"""The default subprotocol of test clients."""

DEFAULT_TIMEOUT = 5.0
"""Seconds ``receive`` and the other waits allow by default."""

MAX_RECORDED = 100_000
"""Messages a client keeps; past this the oldest are dropped (``dropped`` counts them)."""


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A frame received by a simple client (no subprotocol): text as str, binary as bytes."""

    data: str | bytes

    @property
    def data_type(self) -> DataType:
        return DataType.TEXT if isinstance(self.data, str) else DataType.BINARY


Message: TypeAlias = GroupMessage | ServerMessage | RawMessage
"""A data message a test client received: from a group, from the server side, or raw."""


class ClientClosedError(ConnectionError):
    """The client's connection is closed and no further message will arrive."""


class RecordingClient:
    """A connected test client that records what it receives.

    Create clients with :class:`ClientFactory` (or the ``webpubsub_client_factory`` fixture)
    rather than directly.

    Attributes:
        hub: the hub it is connected to.
        subprotocol: its subprotocol, or None for a simple WebSocket client.
        client: the :class:`~webpubsub.client.WebPubSubClient` (PubSub subprotocols).
        ws: the ``websockets`` connection (simple clients).
        messages: every data message received so far, oldest first.
        frames: everything recorded so far: the ``connected`` and ``disconnected`` system
            messages and the data messages (simple clients: the same as ``messages``).
        connected: the ``connected`` system message (None for simple clients).
        disconnected: the ``disconnected`` system message, once the service sent one.
    """

    def __init__(self, hub: str, subprotocol: str | None) -> None:
        self.hub = hub
        self.subprotocol = subprotocol
        self.client: WebPubSubClient | None = None
        self.ws: ClientConnection | None = None
        self.messages: list[Message] = []
        self.frames: list[Downstream | RawMessage] = []
        self.connected: Connected | None = None
        self.disconnected: Disconnected | None = None
        self.dropped = 0
        self._read = 0  # index in ``messages`` of the next one ``receive`` returns
        self._arrived = asyncio.Event()
        self._closed = asyncio.Event()
        self._close_code = (1006, "")
        self._reader: asyncio.Task[None] | None = None

    async def _connect(self, url: str, timeout: float, options: dict[str, Any]) -> None:
        """Open the connection; PubSub clients return once ``connected`` has arrived."""
        if self.subprotocol is None:
            options.setdefault("max_size", None)
            self.ws = await asyncio.wait_for(connect(url, **options), timeout)
            self._reader = asyncio.get_running_loop().create_task(self._read_raw(self.ws))
            return
        options.setdefault("max_message_size", None)
        client = self.client = WebPubSubClient(
            url,
            protocol=self.subprotocol,
            auto_reconnect=False,
            recovery_timeout=0,  # a dropped connection is closed, as for any recorder
            start_timeout=None,  # the timeout below covers it
            sequence_ack_interval=0,  # reliable protocols: ack at once; the buffer drains
            **options,
        )
        client.on("connected", self._on_connected)
        client.on("group-message", self._keep)
        client.on("server-message", self._keep)
        client.on("disconnected", self._on_disconnected)
        client.on("stopped", lambda _: self._on_closed())
        try:
            async with asyncio.timeout(timeout):
                await client.start()
        except ConnectError as exc:
            if isinstance(exc.__cause__, InvalidStatus):
                raise exc.__cause__ from None  # the refused handshake, as it always was
            if exc.close_code is not None:
                raise ClientClosedError(f"closed before 'connected': {exc.message}") from exc
            raise

    # -- identity ---------------------------------------------------------------------------

    @property
    def connection_id(self) -> str:
        """The connection id the service assigned (PubSub subprotocols only)."""
        if self.connected is None:
            raise RuntimeError("simple clients (no subprotocol) are not told their connection id")
        return self.connected.connection_id

    @property
    def user_id(self) -> str | None:
        return self.connected.user_id if self.connected is not None else None

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # -- receiving ------------------------------------------------------------------------

    async def receive(self, timeout: float = DEFAULT_TIMEOUT) -> Message:
        """The next data message not yet returned, waiting up to ``timeout`` seconds for it.

        Raises:
            TimeoutError: nothing arrived in time.
            ClientClosedError: the connection closed with nothing left to return.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._read < len(self.messages):
                self._read += 1
                return self.messages[self._read - 1]
            if self.closed:
                code, reason = self.close_code
                raise ClientClosedError(f"the connection closed ({code} {reason!r})")
            self._arrived.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"no message within {timeout:g} s ({len(self.messages)} received so far)"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def receive_data(self, timeout: float = DEFAULT_TIMEOUT) -> Payload:
        """The payload of the next data message (``receive().data``)."""
        return (await self.receive(timeout)).data

    async def wait_closed(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[int, str]:
        """Wait until the connection is closed; returns the close code and reason."""
        await asyncio.wait_for(self._closed.wait(), timeout)
        return self.close_code

    @property
    def close_code(self) -> tuple[int, str]:
        """(code, reason) the connection closed with (1006 when the socket just dropped).

        For PubSub clients the reason is the ``disconnected`` message, which the service
        also gives as the close reason.
        """
        return self._close_code

    def _on_connected(self, event: ConnectedEvent) -> None:
        self.connected = Connected(event.connection_id, event.user_id)
        self.frames.append(self.connected)

    def _on_disconnected(self, event: DisconnectedEvent) -> None:
        if event.message is not None:
            self.disconnected = Disconnected(event.message)
            self.frames.append(self.disconnected)
        self._close_code = (event.close_code or 1006, event.message or "")

    def _on_closed(self) -> None:
        self._closed.set()
        self._arrived.set()

    async def _read_raw(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                raw = RawMessage(frame)
                self.frames.append(raw)
                self._keep(raw)
        except ConnectionClosed:
            pass
        finally:
            self._close_code = (ws.close_code or 1006, ws.close_reason or "")
            self._on_closed()

    def _keep(self, message: Message) -> None:
        if not isinstance(message, RawMessage):
            self.frames.append(message)
        self.messages.append(message)
        if len(self.messages) > MAX_RECORDED:
            del self.messages[0]
            self.dropped += 1
            self._read = max(self._read - 1, 0)
        self._arrived.set()

    # -- sending --------------------------------------------------------------------------

    @property
    def _pubsub(self) -> WebPubSubClient:
        if self.client is None:
            raise TypeError("simple clients (no subprotocol) send with send(); use a subprotocol")
        return self.client

    async def _acked(self, operation: Awaitable[AckResult], *, wait: bool = True) -> None:
        """Run one of the client's acked operations; a stopped client is a closed one."""
        if not wait:
            # Joins and leaves always carry an ackId: their ack is awaited in the background.
            task = asyncio.ensure_future(operation)
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            await asyncio.sleep(0)  # the task's first step queues the request
            return
        try:
            await operation
        except ClientStoppedError as exc:
            raise ClientClosedError("the connection closed before the ack arrived") from exc

    async def join_group(
        self, group: str, *, ack: bool = True, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Join a group; with ``ack`` (default), wait for the service to confirm it.

        Raises:
            AckError: the service refused (e.g. ``Forbidden`` without the role).
        """
        await self._acked(self._pubsub.join_group(group, timeout=timeout), wait=ack)

    async def leave_group(
        self, group: str, *, ack: bool = True, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Leave a group; with ``ack`` (default), wait for the confirmation."""
        await self._acked(self._pubsub.leave_group(group, timeout=timeout), wait=ack)

    async def send_to_group(
        self,
        group: str,
        data: Payload,
        data_type: DataType | str = DataType.TEXT,
        *,
        no_echo: bool = False,
        ack: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Publish to a group (needs the ``webpubsub.sendToGroup`` role).

        Args:
            group: the group.
            data: ``str`` for text, a JSON value for json, bytes for binary.
            data_type: ``text`` (default), ``json``, ``binary`` or ``protobuf``.
            no_echo: do not deliver the message back to this connection.
            ack: wait for the service's ack (raise :class:`AckError` on failure).
            timeout: seconds to wait for the ack.
        """
        await self._acked(
            self._pubsub.send_to_group(
                group, data, data_type, no_echo=no_echo, fire_and_forget=not ack, timeout=timeout
            )
        )

    async def send_event(
        self,
        event: str,
        data: Payload,
        data_type: DataType | str = DataType.TEXT,
        *,
        ack: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """Send a user event to the hub's event handler; its reply arrives as a message."""
        await self._acked(
            self._pubsub.send_event(
                event, data, data_type, fire_and_forget=not ack, timeout=timeout
            )
        )

    async def send(self, data: str | bytes) -> None:
        """Send one raw frame (text for str, binary for bytes), for simple clients."""
        if self.ws is None:
            raise TypeError("PubSub clients send with send_to_group() or send_event()")
        await self.ws.send(data)

    # -- closing --------------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection and wait until it is closed.

        ``code`` and ``reason`` apply to simple clients; PubSub clients close with 1000.
        """
        if self.client is not None:
            await self.client.stop()
        if self.ws is not None:
            await self.ws.close(code, reason)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._reader), DEFAULT_TIMEOUT)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        who = self.connected.connection_id if self.connected else self.subprotocol or "raw"
        return f"<RecordingClient {self.hub} {who} {len(self.messages)} messages>"


class ClientFactory:
    """Connects recording clients to a service, and closes them all at the end.

    Args:
        connection_string: the service's connection string (its key signs client tokens).
        hub: the hub clients join unless ``connect`` names another.

    Example::

        client = await factory.connect(user_id="alice", roles=["webpubsub.joinLeaveGroup"])
        await client.join_group("room")
    """

    def __init__(self, connection_string: str, hub: str) -> None:
        self.connection_string = connection_string
        self.hub = hub
        self.clients: list[RecordingClient] = []
        self._service_clients: dict[str, WebPubSubServiceClient] = {}

    def client_url(
        self,
        hub: str | None = None,
        *,
        user_id: str | None = None,
        roles: Iterable[str] = (),
        groups: Iterable[str] = (),
        minutes_to_expire: int = 60,
    ) -> str:
        """A client URL with an access token, as an app server would hand one out."""
        hub = hub or self.hub
        service = self._service_clients.get(hub)
        if service is None:
            service = WebPubSubServiceClient.from_connection_string(self.connection_string, hub=hub)
            self._service_clients[hub] = service
        token = service.get_client_access_token(
            user_id=user_id,
            roles=list(roles),
            groups=list(groups),
            minutes_to_expire=minutes_to_expire,
        )
        return token["url"]

    async def connect(
        self,
        *,
        hub: str | None = None,
        user_id: str | None = None,
        roles: Iterable[str] = (),
        groups: Iterable[str] = (),
        subprotocol: str | None = JSON,
        url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        **options: Any,
    ) -> RecordingClient:
        """Connect a client and wait until the service has registered it.

        Args:
            hub: the hub (default: the factory's).
            user_id: the user the token names.
            roles: roles such as ``webpubsub.sendToGroup`` or ``webpubsub.joinLeaveGroup.g``.
            groups: groups to join on connect.
            subprotocol: ``json.webpubsub.azure.v1`` (default), its reliable or protobuf
                variants, or None for a simple WebSocket client.
            url: connect here instead of minting a token (e.g. an anonymous client URL).
            timeout: seconds to wait for the connection to be ready.
            options: passed to :class:`~webpubsub.client.WebPubSubClient` (PubSub
                subprotocols), or to ``websockets.asyncio.client.connect`` (simple clients).

        Returns:
            A client that PubSub subprotocols have seen ``connected``: it is registered
            in the hub and its ``connection_id`` is known.

        Raises:
            websockets.exceptions.InvalidStatus: the service refused the handshake.
            ClientClosedError: the service closed the connection before ``connected``.
        """
        hub = hub or self.hub
        target = url or self.client_url(hub, user_id=user_id, roles=roles, groups=groups)
        client = RecordingClient(hub, subprotocol)
        await client._connect(target, timeout, options)
        self.clients.append(client)
        return client

    __call__ = connect

    async def close(self) -> None:
        """Close every client this factory connected, and its token minters."""
        await asyncio.gather(*(client.close() for client in self.clients))
        self.clients.clear()
        for service in self._service_clients.values():
            service.close()
        self._service_clients.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
