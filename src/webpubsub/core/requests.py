"""Client requests, as events: what a client asks of the service over a PubSub subprotocol.

Codecs (JSON, protobuf, raw) parse frames into these values; :class:`~webpubsub.core.hub.Hub`
acts on them. One frozen dataclass per message type of spec 4.3.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .message import DataType


@dataclass(frozen=True, slots=True)
class JoinGroup:
    group: str
    ack_id: int | None = None


@dataclass(frozen=True, slots=True)
class LeaveGroup:
    group: str
    ack_id: int | None = None


@dataclass(frozen=True, slots=True)
class SendToGroup:
    group: str
    data: bytes
    data_type: DataType
    ack_id: int | None = None
    no_echo: bool = False
    metadata: Mapping[str, str] | None = None
    ttl: int = 0  # ttlSeconds: 0 never expires (spec-next 4)


@dataclass(frozen=True, slots=True)
class SendEvent:
    """A user event for the upstream (``event`` type, or any frame of a simple client)."""

    event: str
    data: bytes
    data_type: DataType
    ack_id: int | None = None
    metadata: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Invoke:
    """``invoke`` (spec-next 1): a user event whose answer goes back in ``invokeResponse``.

    ``data_type`` None: no payload. ``error`` set: the frame was well-formed but a value was
    bad; it is answered ``BadRequest`` without calling the upstream.
    """

    invocation_id: str
    event: str
    data: bytes = b""
    data_type: DataType | None = None
    metadata: Mapping[str, str] | None = None
    error: str | None = None
    error_name: str = "BadRequest"  # the invokeResponse error's name when ``error`` is set


@dataclass(frozen=True, slots=True)
class CancelInvocation:
    invocation_id: str


@dataclass(frozen=True, slots=True)
class StreamStart:
    """``sendToGroup`` with a ``stream`` (spec-next 2.1): open a stream to ``group``."""

    group: str
    stream_id: str
    no_echo: bool = False
    idle_ms: int | None = None


@dataclass(frozen=True, slots=True)
class StreamData:
    """``streamData``: a fragment, or a keepalive when ``sequence_id`` is None."""

    stream_id: str
    sequence_id: int | None = None
    data: bytes = b""
    data_type: DataType = DataType.TEXT


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """``streamEnd``; ``error`` (message, userErrorCode) when the publisher aborts."""

    stream_id: str
    error: tuple[str, str | None] | None = None


@dataclass(frozen=True, slots=True)
class StreamInvalid:
    """A stream frame with a bad value: the stream is refused or ended with ``BadRequest``."""

    stream_id: str
    problem: str
    start: bool = False  # a start frame (nothing to end) or a frame of an open stream


@dataclass(frozen=True, slots=True)
class SetGroupState:
    """``setGroupState`` (spec-next 5): ``state`` None clears the caller's entry."""

    group: str
    state: Mapping[str, str] | None = None
    ack_id: int | None = None


@dataclass(frozen=True, slots=True)
class SubscribeGroupState:
    """``subscribeGroupState`` / ``unsubscribeGroupState`` (``subscribe`` False)."""

    group: str
    ack_id: int | None = None
    subscribe: bool = True


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class SequenceAck:
    sequence_id: int


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A known-but-unsupported request type (streaming, invoke, group state) with its ackId."""

    type: str
    ack_id: int | None = None


ClientRequest = (
    JoinGroup
    | LeaveGroup
    | SendToGroup
    | SendEvent
    | Invoke
    | CancelInvocation
    | StreamStart
    | StreamData
    | StreamEnd
    | StreamInvalid
    | Ping
    | SequenceAck
    | SetGroupState
    | SubscribeGroupState
    | Unsupported
)
