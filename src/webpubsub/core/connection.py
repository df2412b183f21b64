"""One client connection's state in the routing core, behind a transport that moves bytes."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Protocol

from .randomness import random_bytes
from .reliable import Recovery
from .streams import Streams

if TYPE_CHECKING:
    from .errors import ClientError
    from .groupstate import StateItem
    from .message import DataType, Message
    from .requests import ClientRequest
    from .streams import Ack as StreamAck
    from .streams import Closed as StreamClosed


# Why a connection cannot move to another node (``Connection.prepare_move``).
GONE = "it no longer exists"
OTHER_SUBPROTOCOL = "the subprotocol differs from the connection's"


class CloseCode(IntEnum):
    """WebSocket close codes the service uses (RFC 6455 7.4.1, spec 4.10)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


class Transport(Protocol):
    """What the core needs from the I/O edge: queue frames, close with a code."""

    def send(self, frame: bytes) -> None:
        """Queue the bytes of one or more complete WebSocket frames."""

    def send_expiring(self, pieces: tuple[bytes, ...], expires: float) -> None:
        """Queue one message's frames; drop them if they are still queued, not handed to
        the kernel, at ``expires`` (``time.time()``): the message's TTL ran out."""

    def close(self, code: int, reason: str) -> None:
        """Send a close frame and drop the connection."""


class NullTransport:
    """A transport that goes nowhere: for a handshake that cannot complete, or a reliable
    connection adopted after its client left again (it waits, detached, for a recovery)."""

    def send(self, frame: bytes) -> None:
        pass

    def send_expiring(self, pieces: tuple[bytes, ...], expires: float) -> None:
        pass

    def close(self, code: int, reason: str) -> None:
        pass


class Codec(Protocol):
    """A subprotocol's encoder/decoder (see ``webpubsub.protocols``)."""

    subprotocol: str | None
    is_pubsub: bool
    is_reliable: bool

    def encode_message(self, message: Message) -> bytes: ...

    def encode_ack(self, ack_id: int, error: ClientError | None) -> bytes | None: ...

    def encode_connected(
        self, connection_id: str, user_id: str | None, reconnection_token: str | None
    ) -> bytes | None: ...

    def encode_disconnected(self, reason: str) -> bytes | None: ...

    def encode_pong(self) -> bytes | None: ...

    def decode(self, data: bytes, is_text: bool) -> ClientRequest: ...

    def peek_ack_id(self, data: bytes, is_text: bool) -> int | None:
        """The ackId of a message that will not be decoded (throttled), read cheaply."""
        ...

    def sequence(self, encoded: bytes, sequence_id: int) -> tuple[bytes, ...]:
        """Reliable codecs: the frame pieces of an encoded message with its sequence id."""
        ...

    # What only the Web PubSub subprotocols carry (spec-next): None where a subprotocol has
    # no such frame (raw, MQTT, Socket.IO: see ``WithoutExtras``).

    def encode_stream_answer(self, answer: StreamAck | StreamClosed) -> bytes | None: ...

    def encode_group_state(self, kind: str, group: str, items: Iterable[StateItem]) -> bytes | None:
        """A ``groupStateSnapshot``/``groupStateUpdate`` frame (sequenced like data)."""
        ...

    def sequence_group_state(
        self, kind: str, encoded: bytes, sequence_id: int
    ) -> tuple[bytes, ...] | None:
        """As ``sequence`` for a group-state frame, where it differs; None: as ``sequence``."""
        ...

    def peek_invocation_id(self, data: bytes) -> str | None:
        """The invocationId of an ``invoke`` that will not be decoded (throttled)."""
        ...

    def encode_invoke_response(
        self,
        invocation_id: str,
        *,
        data: bytes | None = None,
        data_type: DataType | None = None,
        error: tuple[str, str] | None = None,
        metadata: Any = None,
    ) -> bytes | None: ...


class WithoutExtras:
    """The spec-next parts of ``Codec`` for a subprotocol that has none of them."""

    def encode_stream_answer(self, answer: StreamAck | StreamClosed) -> bytes | None:
        return None

    def encode_group_state(self, kind: str, group: str, items: Iterable[StateItem]) -> bytes | None:
        return None

    def sequence_group_state(
        self, kind: str, encoded: bytes, sequence_id: int
    ) -> tuple[bytes, ...] | None:
        return None

    def peek_invocation_id(self, data: bytes) -> str | None:
        return None

    def encode_invoke_response(
        self,
        invocation_id: str,
        *,
        data: bytes | None = None,
        data_type: DataType | None = None,
        error: tuple[str, str] | None = None,
        metadata: Any = None,
    ) -> bytes | None:
        return None


MAX_ACK_IDS = 65536


def new_connection_id() -> str:
    """A unique, opaque connection id (32 url-safe characters: 24 random bytes)."""
    return base64.urlsafe_b64encode(random_bytes(24)).decode("ascii")


class Connection:
    """A logical client connection: identity, roles, groups and its transport.

    ``per_message`` connections (MQTT) encode each message themselves through
    ``deliver_message``, since the bytes depend on their subscription (QoS, packet id).

    The hub owns membership; ``groups`` here mirrors it so removal is O(groups of this
    connection), and so filters can test ``'g' in groups`` directly.
    """

    __slots__ = (
        "_ack_ids",
        "added_at",
        "closed",
        "codec",
        "connection_id",
        "event_id",
        "groups",
        "hub",
        "raw_group",
        "raw_no_echo",
        "recovery",
        "roles",
        "state",
        "streams",
        "transport",
        "user_id",
    )

    def __init__(
        self,
        hub: str,
        codec: Codec,
        transport: Transport,
        *,
        user_id: str | None = None,
        roles: Iterable[str] = (),
        connection_id: str | None = None,
    ) -> None:
        self.added_at = 0  # the hub's version when it was added (core/hub.py)
        self.connection_id = connection_id or new_connection_id()
        self.hub = hub
        self.user_id = user_id or None
        self.codec = codec
        self.transport = transport
        self.roles: set[str] = set(roles)
        self.groups: set[str] = set()
        self.state: str | None = None  # ce-connectionState, set by the upstream (spec 5.9)
        self.event_id = 0  # ce-id of the last upstream event of this connection
        self.closed = False
        # webpubsub_mode=sendToGroup for simple clients (spec 4.2)
        self.raw_group: str | None = None
        self.raw_no_echo = False
        self._ack_ids: dict[int, None] = {}
        # Reliable subprotocols keep a resend buffer and survive a dropped socket (spec 4.7).
        self.recovery: Recovery | None = Recovery() if codec.is_reliable else None
        # Outbound group streams (spec-next 2), created with the first.
        self.streams: Streams | None = None

    per_message = False

    def deliver_message(self, message: Message) -> bool:
        """Per-message connections only: queue ``message``; False when it overflowed."""
        raise NotImplementedError

    @property
    def subprotocol(self) -> str | None:
        return self.codec.subprotocol

    def seen_ack(self, ack_id: int) -> bool:
        """Record ``ack_id``; True when it was already processed (spec 4.5, Duplicate)."""
        if ack_id in self._ack_ids:
            return True
        self._ack_ids[ack_id] = None
        if len(self._ack_ids) > MAX_ACK_IDS:
            del self._ack_ids[next(iter(self._ack_ids))]
        return False

    def ack_ids(self) -> tuple[int, ...]:
        """The ackIds recorded, oldest first (they move with the connection)."""
        return tuple(self._ack_ids)

    def forget_ack(self, ack_id: int) -> None:
        """Unrecord ``ack_id``: its request was refused unexecuted (``Throttled``) and may be
        sent again with the same id."""
        self._ack_ids.pop(ack_id, None)

    def session_state(self) -> dict[str, Any] | None:
        """State a kind of connection keeps beyond the core's (an MQTT session), as JSON, to
        move with it to another node (``core/handover.py``); None for the others."""
        return None

    def prepare_move(self, token: str, subprotocol: str) -> str:
        """Another node's client asks for this connection (``engine/handover.py``): why it
        cannot move there ("" when it can; the caller then releases it).

        A reliable connection needs its reconnection token and the same subprotocol."""
        if self.closed:
            return GONE
        if self.codec.subprotocol != subprotocol:
            return OTHER_SUBPROTOCOL
        if self.recovery is None:
            return GONE
        if not self.recovery.check_token(token):
            return "the reconnection token is invalid"
        return ""

    @property
    def attached(self) -> bool:
        """Whether a socket carries this connection now (False while it is recovering)."""
        return self.recovery is None or self.recovery.attached

    def send(self, frame: bytes | None) -> None:
        """Send a control envelope (ack, pong, system): not buffered, lost if detached."""
        if frame is not None and not self.closed and self.attached:
            self.transport.send(frame)

    def deliver(
        self,
        encoded: bytes,
        expires: float | None = None,
        sequence: Callable[[bytes, int], tuple[bytes, ...]] | None = None,
    ) -> bool:
        """Send an encoded data message; reliable connections number and buffer it.

        ``expires`` (``time.time()``), for a message with a TTL: it is dropped if not handed
        to the kernel by then, also when replayed after a recovery (spec-next 4).
        ``sequence``: how to number a frame that is not a data message (default
        ``codec.sequence``), e.g. a protobuf group-state frame.
        Returns False when the resend buffer overflowed: the connection must be closed as
        unrecoverable (spec 4.7).
        """
        if self.closed:
            return True
        recovery = self.recovery
        if recovery is None:
            pieces: tuple[bytes, ...] = (encoded,)
        else:
            buffer = recovery.buffer
            sequence_id = buffer.take_id()
            pieces = (sequence or self.codec.sequence)(encoded, sequence_id)
            if not buffer.push(sequence_id, pieces, expires):
                return False
            if not recovery.attached:
                return True
        if expires is not None:
            self.transport.send_expiring(pieces, expires)
        else:
            for piece in pieces:
                self.transport.send(piece)
        return True

    def close(self, code: int, reason: str) -> None:
        """Say goodbye in the subprotocol's own words, then close the socket."""
        if self.closed:
            return
        self.send(self.codec.encode_disconnected(reason))
        self.closed = True
        if self.attached:
            self.transport.close(code, reason)

    def __repr__(self) -> str:
        return f"<Connection {self.connection_id} hub={self.hub} user={self.user_id}>"
