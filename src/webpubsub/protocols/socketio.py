"""A Socket.IO client as a connection of its hub (socketio spec 3, 5): Sans-I/O.

Engine.IO packets come in from the client's transport (``receive``) and go up to the app
server as ``message`` events (Engine.IO payloads, one at a time in order); what the app
server sends (``:send`` bodies, Engine.IO payloads) reaches ``deliver_message`` through the
hub like any message, and goes out to the transport as packets. The rules (namespaces as
groups, the three DISCONNECT shapes) are in ``core.socketio``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from ..core import commands as c
from ..core.connection import Connection, Transport, WithoutExtras
from ..core.message import Message, Source
from ..core.socketio import (
    Do,
    SocketIOState,
    ack_of,
    namespace_group,
    stateless,
    with_ack_id,
)
from . import engineio

if TYPE_CHECKING:
    from ..core.errors import ClientError
    from ..core.node import Node
    from ..core.requests import ClientRequest

log = logging.getLogger("webpubsub.socketio")


class EngineTransport(Transport, Protocol):
    """What a Socket.IO connection writes to: its Engine.IO session (polling or WebSocket)."""

    def push(self, packets: list[str]) -> None: ...

    def push_frames(self, frames: bytes) -> bool:
        """Queue WebSocket frames as they are; False when the session is not on WebSocket
        (then the packets go through ``push``)."""
        ...

    def end(self, reason: str, *, linger: bool = False) -> None: ...


class SocketIOCodec(WithoutExtras):
    """The ``Codec`` face of Socket.IO for the node: messages go through deliver_message."""

    subprotocol: str | None = "socketio"
    is_pubsub = False
    is_reliable = False
    per_message = True

    def encode_message(self, message: Message) -> bytes:
        raise NotImplementedError("Socket.IO connections relay through deliver_message")

    def encode_ack(self, ack_id: int, error: ClientError | None) -> bytes | None:
        return None

    def encode_connected(
        self, connection_id: str, user_id: str | None, reconnection_token: str | None
    ) -> bytes | None:
        return None  # the open packet is the app server's, relayed at the handshake

    def encode_disconnected(self, reason: str) -> bytes | None:
        return None

    def encode_pong(self) -> bytes | None:
        return None

    def decode(self, data: bytes, is_text: bool) -> ClientRequest:
        raise NotImplementedError("Socket.IO connections read through SocketIOConnection")

    def peek_ack_id(self, data: bytes, is_text: bool) -> int | None:
        return None

    def sequence(self, encoded: bytes, sequence_id: int) -> tuple[bytes, ...]:
        raise NotImplementedError


SOCKETIO = SocketIOCodec()

# Client packets that go up to the app server (socketio spec 5.1): messages (and their
# binary attachments) and pongs, its engine.io socket's heartbeat.
_UPSTREAM = frozenset((engineio.MESSAGE, engineio.PONG, engineio.CLOSE))


# The key, in a message's frame cache, of the WebSocket frames of a payload every Socket.IO
# connection relays as it is (b"": one that needs each connection's rules).
_SHARED = ("socketio", "frames")


def _shared_frames(data: bytes) -> bytes:
    try:
        packets = engineio.split_payload(data)
    except engineio.EngineIOError:
        return b""  # each connection logs and drops it
    if not all(stateless(packet) for packet in packets):
        return b""
    return engineio.ws_frames(packets)


class SocketIOConnection(Connection):
    """One Engine.IO connection of a Socket.IO client, whatever its transport."""

    __slots__ = ("_attaching", "acks", "node", "on_event", "sio")

    per_message = True

    def __init__(
        self,
        hub: str,
        transport: EngineTransport,
        node: Node,
        *,
        connection_id: str,
        user_id: str | None = None,
        roles: Iterable[str] = (),
    ) -> None:
        super().__init__(
            hub, SOCKETIO, transport, user_id=user_id, roles=roles, connection_id=connection_id
        )
        self.node = node
        self.sio = SocketIOState()
        # Where client packets go (the edge sets it: a ``message`` event to the app server);
        # False when it cannot take them (too many waiting).
        self.on_event: Callable[[SocketIOConnection, bytes], bool] | None = None
        # Broadcasts with acknowledgements waiting for this client (socketio spec 4.5):
        # ack id -> what takes its ACK payload (None: the connection ended first).
        self.acks: dict[int, Callable[[str | None], None]] = {}
        self._attaching: tuple[int, list[str], int] | None = None  # a BINARY_ACK's parts

    @property
    def engine(self) -> EngineTransport:
        return self.transport  # type: ignore[return-value]

    # -- from the client ---------------------------------------------------------------

    def receive(self, packets: list[str]) -> None:
        """Engine.IO packets from the client (after the transport took its own: ping probe,
        upgrade, noop): up to the app server as one payload, in order."""
        if self.closed:
            return
        up: list[str] = []
        closing = False
        for packet in packets:
            if self._attaching is not None or (self.acks and self._acked(packet)):
                continue  # an acknowledgement of a broadcast: it goes to that broadcast
            kind = packet[0]
            if kind == "b" or kind in _UPSTREAM:
                if kind == engineio.CLOSE:
                    closing = True
                    break
                left = self.sio.from_client(packet)
                if left is not None:
                    self._leave_namespace(left)
                up.append(packet)
        if up and self.on_event is not None and not self.on_event(self, engineio.join_payload(up)):
            self.end("Too many events are waiting for the app server.")
            return
        if closing:
            self.end("The client closed the connection.")

    def _acked(self, packet: str) -> bool:
        """Take ``packet`` if it is (part of) the ACK of a broadcast waiting for it."""
        attaching = self._attaching
        if attaching is not None:
            ack_id, parts, left = attaching
            parts.append(packet)
            if left > 1:
                self._attaching = (ack_id, parts, left - 1)
                return True
            self._attaching = None
            answer = self.acks.pop(ack_id, None)
            if answer is not None:
                answer(engineio.SEPARATOR.join(parts))
            return True
        found = ack_of(packet)
        if found is None or found[0] not in self.acks:
            return False
        ack_id, attachments = found
        if attachments:
            self._attaching = (ack_id, [packet], attachments)
        else:
            self.acks.pop(ack_id)(packet)
        return True

    def invoke(self, packets: list[str], ack_id: int, answer: Callable[[str | None], None]) -> bool:
        """Send a broadcast's EVENT (and its attachments) with ``ack_id``; ``answer`` gets
        the client's ACK payload, or None if the connection ends first."""
        first = with_ack_id(packets[0], ack_id) if packets else None
        if first is None or self.closed:
            return False
        self.acks[ack_id] = answer
        self.engine.push([first, *packets[1:]])
        return True

    # -- from the app server (through the hub) ------------------------------------------

    def deliver_message(self, message: Message) -> bool:
        """An Engine.IO payload the app server sent to this connection (directly, to a
        group, or to all): relayed packet by packet under socketio spec 5.2-5.4."""
        if self.closed:
            return True
        shared = message.frames.get(_SHARED)
        if shared is None:
            shared = message.frames[_SHARED] = _shared_frames(message.data)
        if shared and self.engine.push_frames(shared):
            return True  # the hot path: frames serialized once for every recipient
        try:
            packets = engineio.split_payload(message.data)
        except engineio.EngineIOError as exc:
            log.warning("dropped a payload for %s: %s", self.connection_id, exc)
            return True
        group = message.group if message.source is Source.GROUP else None
        out: list[str] = []
        upstream: list[str] = []
        close = False
        for packet in packets:
            decision = self.sio.from_server(packet, group)
            if decision.do is Do.CLOSE:
                close = True
                break
            if decision.do is Do.DROP:
                continue
            out.append(decision.packet)
            if decision.join is not None:
                self._join(decision.join)
            if decision.leave_namespace is not None:
                self._leave_namespace(decision.leave_namespace)
            if decision.upstream is not None:
                upstream.append(decision.upstream)
            if decision.close_after:
                close = True
                break
        if out:
            self.engine.push(out)
        if upstream and self.on_event is not None:
            self.on_event(self, engineio.join_payload(upstream))
        if close:
            self.end("The app server closed the connection.", orderly=True)
        return True

    # -- groups ----------------------------------------------------------------------------

    def _join(self, group: str) -> None:
        hub = self.node.hubs.get(self.hub)
        if hub is None or group in self.groups:
            return
        hub.join(self, group)
        if self.node.engine is not None:
            self.node.engine.record_soon(
                self.hub, c.AddToGroup(c.ToConnection(self.connection_id), group)
            )

    def _leave_namespace(self, nsp: str) -> None:
        """Leave the namespace's group and its rooms (socketio spec 5.1, 5.4)."""
        hub = self.node.hubs.get(self.hub)
        if hub is None:
            return
        prefix = namespace_group(nsp)
        for group in [g for g in self.groups if g.startswith(prefix)]:
            hub.leave(self, group)
            if self.node.engine is not None:
                self.node.engine.record_soon(
                    self.hub, c.RemoveFromGroup(c.ToConnection(self.connection_id), group)
                )

    # -- the end ---------------------------------------------------------------------------

    def end(self, reason: str, *, orderly: bool = False) -> None:
        """Close the Engine.IO connection: the app server hears ``disconnected``.
        ``orderly``: the client is told (its next poll gets the close), not just dropped."""
        if self.closed:
            return
        self.node.disconnect(self, reason)
        self.closed = True
        self.engine.end(reason, linger=orderly)
        self.drop_acks()

    def drop_acks(self) -> None:
        """The connection is over: the broadcasts waiting for it count it as gone."""
        acks, self.acks = self.acks, {}
        for answer in acks.values():
            answer(None)
