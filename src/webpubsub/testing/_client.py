"""Recording test clients: WebSocket clients that keep everything the service sends them.

A :class:`RecordingClient` speaks one PubSub subprotocol through the project's own client
codecs (``webpubsub.protocols.client``), or no subprotocol at all (a simple client). It
records every message the service sends; tests wait for the next one with
``await client.receive(timeout=...)`` instead of sleeping. :class:`ClientFactory` mints
client access tokens with the connection string's key and connects clients, closing them all
at the end of a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeAlias

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from ..core.message import DataType
from ..core.requests import ClientRequest, JoinGroup, LeaveGroup, SendEvent, SendToGroup
from ..core.requests import SequenceAck as SequenceAckRequest
from ..protocols.client import ClientCodec, client_codec
from ..protocols.downstream import (
    Ack,
    Connected,
    Disconnected,
    Downstream,
    GroupMessage,
    Payload,
    ServerMessage,
    encode_payload,
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


class AckError(Exception):
    """The service answered a request with a failed ack (``Forbidden``, ``InvalidMessage``...).

    Attributes:
        name: the ack error name (spec 4.4).
        message: the service's explanation.
    """

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


class ClientClosedError(ConnectionError):
    """The client's connection is closed and no further message will arrive."""


class RecordingClient:
    """A connected test client that records what it receives.

    Create clients with :class:`ClientFactory` (or the ``webpubsub_client_factory`` fixture)
    rather than directly.

    Attributes:
        hub: the hub it is connected to.
        subprotocol: its subprotocol, or None for a simple WebSocket client.
        messages: every data message received so far, oldest first.
        frames: every service message received so far (acks, pongs, system messages too;
            simple clients: the same as ``messages``).
        connected: the ``connected`` system message (None for simple clients).
        disconnected: the ``disconnected`` system message, once the service sent one.
    """

    def __init__(self, ws: ClientConnection, hub: str, subprotocol: str | None) -> None:
        self.ws = ws
        self.hub = hub
        self.subprotocol = subprotocol
        self._codec: ClientCodec | None = client_codec(subprotocol) if subprotocol else None
        self.messages: list[Message] = []
        self.frames: list[Downstream | RawMessage] = []
        self.connected: Connected | None = None
        self.disconnected: Disconnected | None = None
        self.dropped = 0
        self._read = 0  # index in ``messages`` of the next one ``receive`` returns
        self._arrived = asyncio.Event()
        self._ready = asyncio.Event()  # set on ``connected``, or when the connection ends
        self._acks: dict[int, asyncio.Future[Ack]] = {}
        self._ack_ids = itertools.count(1)
        self._reader = asyncio.get_running_loop().create_task(self._read_frames())

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
        return self._reader.done()

    async def wait_connected(self, timeout: float = DEFAULT_TIMEOUT) -> Connected:
        """Wait for the ``connected`` system message (PubSub subprotocols).

        Raises:
            ClientClosedError: the connection closed first.
        """
        await asyncio.wait_for(self._ready.wait(), timeout)
        if self.connected is None:
            code, reason = self.close_code
            raise ClientClosedError(f"closed before 'connected' ({code} {reason!r})")
        return self.connected

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
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code

    @property
    def close_code(self) -> tuple[int, str]:
        """(code, reason) the service closed with (1006 when the socket just dropped)."""
        code = self.ws.close_code
        return (code if code is not None else 1006, self.ws.close_reason or "")

    async def _read_frames(self) -> None:
        try:
            async for frame in self.ws:
                sequence_id = self._record(frame)
                if sequence_id is not None:
                    # Reliable subprotocols: acknowledge at once so the resend buffer drains.
                    await self._send(SequenceAckRequest(sequence_id))
        except ConnectionClosed:
            pass
        finally:
            for waiter in self._acks.values():
                if not waiter.done():
                    waiter.set_exception(ClientClosedError("closed before the ack arrived"))
            self._acks.clear()
            self._ready.set()
            self._arrived.set()

    def _record(self, frame: str | bytes) -> int | None:
        """Keep one frame; returns the sequence id to acknowledge, if any."""
        codec = self._codec
        if codec is None:
            raw = RawMessage(frame)
            self.frames.append(raw)
            self._keep(raw)
            return None
        message = codec.decode_downstream(frame)
        if message is None:
            return None  # a message type this client does not know: skipped, as SDKs do
        self.frames.append(message)
        match message:
            case GroupMessage() | ServerMessage():
                self._keep(message)
                return message.sequence_id
            case Ack(ack_id=ack_id):
                waiter = self._acks.pop(ack_id, None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(message)
            case Connected():
                self.connected = message
                self._ready.set()
            case Disconnected():
                self.disconnected = message
        return None

    def _keep(self, message: Message) -> None:
        self.messages.append(message)
        if len(self.messages) > MAX_RECORDED:
            del self.messages[0]
            self.dropped += 1
            self._read = max(self._read - 1, 0)
        self._arrived.set()

    # -- sending --------------------------------------------------------------------------

    async def _send(self, request: ClientRequest) -> None:
        """Encode one request with the subprotocol's codec and send it."""
        codec = self._codec
        if codec is None:
            raise TypeError("simple clients (no subprotocol) send with send(); use a subprotocol")
        payload = codec.encode_request(request)
        await self.ws.send(payload.decode("utf-8") if codec.text_frames else payload)

    async def _request(self, request: ClientRequest, ack_id: int | None, timeout: float) -> None:
        if ack_id is None:
            await self._send(request)
            return
        waiter: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = waiter
        try:
            await self._send(request)
            ack = await asyncio.wait_for(waiter, timeout)
        finally:
            self._acks.pop(ack_id, None)
        if not ack.success and not ack.is_duplicate:
            error = ack.error
            raise AckError(error.name if error else "Error", error.message if error else "")

    def _ack_id(self, ack: bool) -> int | None:
        return next(self._ack_ids) if ack else None

    async def join_group(
        self, group: str, *, ack: bool = True, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Join a group; with ``ack`` (default), wait for the service to confirm it.

        Raises:
            AckError: the service refused (e.g. ``Forbidden`` without the role).
        """
        ack_id = self._ack_id(ack)
        await self._request(JoinGroup(group, ack_id), ack_id, timeout)

    async def leave_group(
        self, group: str, *, ack: bool = True, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Leave a group; with ``ack`` (default), wait for the confirmation."""
        ack_id = self._ack_id(ack)
        await self._request(LeaveGroup(group, ack_id), ack_id, timeout)

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
        kind = DataType(data_type)
        ack_id = self._ack_id(ack)
        request = SendToGroup(group, encode_payload(data, kind), kind, ack_id, no_echo)
        await self._request(request, ack_id, timeout)

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
        kind = DataType(data_type)
        ack_id = self._ack_id(ack)
        request = SendEvent(event, encode_payload(data, kind), kind, ack_id)
        await self._request(request, ack_id, timeout)

    async def send(self, data: str | bytes) -> None:
        """Send one raw frame (text for str, binary for bytes), for simple clients."""
        await self.ws.send(data)

    # -- closing --------------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the connection and wait until it is closed."""
        await self.ws.close(code, reason)
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
            options: passed to ``websockets.asyncio.client.connect``.

        Returns:
            A client that PubSub subprotocols have seen ``connected``: it is registered
            in the hub and its ``connection_id`` is known.

        Raises:
            websockets.exceptions.InvalidStatus: the service refused the handshake.
        """
        hub = hub or self.hub
        target = url or self.client_url(hub, user_id=user_id, roles=roles, groups=groups)
        options.setdefault("max_size", None)
        offered = [Subprotocol(subprotocol)] if subprotocol else None
        ws = await asyncio.wait_for(connect(target, subprotocols=offered, **options), timeout)
        client = RecordingClient(ws, hub, subprotocol)
        self.clients.append(client)
        if subprotocol is not None:
            await client.wait_connected(timeout)
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
