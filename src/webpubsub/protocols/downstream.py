"""Service-to-client messages, as values: what a PubSub client receives (spec 4.4, 4.8).

The counterpart of :mod:`webpubsub.core.requests`: the codecs in this package encode these
messages on the service side and decode them on the client side (``decode_downstream``), so
both ends share one implementation of each subprotocol. One frozen dataclass per message type.

Payloads are decoded to Python values, the way the official client SDKs hand them out:

==========  ==========================================================================
data type   ``data``
==========  ==========================================================================
``json``    the parsed JSON value (dict, list, str, int, float, bool or None)
``text``    :class:`str`
``binary``  :class:`bytes`
``protobuf`` :class:`bytes`: the serialized ``google.protobuf.Any``
==========  ==========================================================================
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, TypeAlias

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtobufMessage

from ..core.message import DataType

Payload: TypeAlias = Any
"""A decoded payload: a JSON value, ``str`` or ``bytes`` depending on its data type."""


@dataclass(frozen=True, slots=True)
class Connected:
    """The ``connected`` system message: the logical connection is ready (spec 4.4, 4.7).

    ``reconnection_token`` is set on the reliable subprotocols only; a recovered connection
    gets a new ``Connected`` with the same ``connection_id``.
    """

    connection_id: str
    user_id: str | None = None
    reconnection_token: str | None = None


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The ``disconnected`` system message, sent just before the service closes the socket."""

    message: str = ""


@dataclass(frozen=True, slots=True)
class AckErrorDetail:
    """``error`` of a failed ack: ``name`` is ``Forbidden``, ``Duplicate``, ... (spec 4.4)."""

    name: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    """The answer to a request that carried an ``ackId`` (spec 4.5)."""

    ack_id: int
    success: bool
    error: AckErrorDetail | None = None

    @property
    def is_duplicate(self) -> bool:
        """The service had already processed this ackId; SDKs treat that as success."""
        return self.error is not None and self.error.name == "Duplicate"


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """The ``stream`` of a group message that is a stream fragment (spec-next 2.2):
    ``end`` on the terminal frame, with ``error`` (name, message, user error code) if the
    stream failed."""

    stream_id: str
    sequence_id: int
    end: bool = False
    error: tuple[str, str, str | None] | None = None


@dataclass(frozen=True, slots=True)
class GroupMessage:
    """A message published to a group the connection is in (``from: group``).

    ``from_user_id`` names the publishing client's user, when it has one (JSON protocols
    only: protobuf ``DataMessage`` has no such field). ``sequence_id`` is set on the
    reliable subprotocols.
    """

    group: str
    data: Payload
    data_type: DataType
    from_user_id: str | None = None
    sequence_id: int | None = None
    metadata: dict[str, str] | None = None  # spec-next 3.4
    stream: StreamInfo | None = None  # a group stream's fragment (spec-next 2)


@dataclass(frozen=True, slots=True)
class ServerMessage:
    """A message from the server side (``from: server``): a REST send or an event reply."""

    data: Payload
    data_type: DataType
    sequence_id: int | None = None
    metadata: dict[str, str] | None = None  # spec-next 3.4


@dataclass(frozen=True, slots=True)
class Pong:
    """The answer to a ``ping`` request (spec 4.9)."""


@dataclass(frozen=True, slots=True)
class InvokeResponse:
    """The answer to an ``invoke`` (spec-next 1.1): a payload, or an error."""

    invocation_id: str
    success: bool
    data: Payload = None
    data_type: DataType | None = None
    error: AckErrorDetail | None = None
    metadata: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class StreamAnswer:
    """``streamAck`` / ``streamNack`` (``expected`` set) or ``streamClosed`` (``closed``,
    ``error`` when it failed) for one of this client's outbound streams (spec-next 2.2)."""

    stream_id: str
    closed: bool = False
    expected: int | None = None
    error: AckErrorDetail | None = None


@dataclass(frozen=True, slots=True)
class GroupStateEntry:
    """One connection's state in a group (``state`` None: cleared, or it left)."""

    connection_id: str
    user_id: str | None
    state: dict[str, str] | None
    updated_at: int


@dataclass(frozen=True, slots=True)
class GroupStates:
    """``groupStateSnapshot`` (``snapshot`` True: every entry) or ``groupStateUpdate`` (the
    changed entries) of a group this client subscribed to (spec-next 5)."""

    group: str
    items: tuple[GroupStateEntry, ...]
    snapshot: bool = False
    sequence_id: int | None = None


Downstream: TypeAlias = (
    Connected
    | Disconnected
    | Ack
    | GroupMessage
    | ServerMessage
    | Pong
    | InvokeResponse
    | StreamAnswer
    | GroupStates
)
"""Every service-to-client message a client codec decodes."""


def encode_payload(data: Payload, data_type: DataType | str) -> bytes:
    """The payload bytes of a value, as :class:`~webpubsub.core.message.Message` keeps them.

    That is the JSON text for ``json``, UTF-8 for ``text``, the bytes for ``binary`` and the
    serialized ``Any`` for ``protobuf``. Requests carry these bytes; codecs put them on the
    wire.

    Args:
        data: a JSON-serializable value (``json``), ``str`` (``text``), a bytes-like object
            (``binary``), or for ``protobuf`` a bytes-like serialized ``Any``, an ``Any`` or
            any other protobuf message (packed into an ``Any``).
        data_type: how the receivers should read the payload (a :class:`DataType` or its
            value, such as ``"json"``).

    Returns:
        The payload bytes.

    Raises:
        TypeError: ``data`` does not fit ``data_type`` (or is not JSON-serializable).
        ValueError: an unknown ``data_type``; ``data`` holding NaN or infinity (not JSON), or
            protobuf bytes that are not a serialized ``Any``.
    """
    data_type = DataType(data_type)
    if data_type is DataType.JSON:
        return _json_dumps(data).encode("utf-8")
    if data_type is DataType.TEXT:
        if not isinstance(data, str):
            raise TypeError(f"text data must be str, not {type(data).__name__}")
        return data.encode("utf-8")
    if data_type is DataType.BINARY:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"binary data must be bytes-like, not {type(data).__name__}")
        return bytes(data)
    if isinstance(data, any_pb2.Any):
        return data.SerializeToString()
    if isinstance(data, ProtobufMessage):
        packed = any_pb2.Any()
        packed.Pack(data)
        return packed.SerializeToString()
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(
            f"protobuf data must be a protobuf message or bytes, not {type(data).__name__}"
        )
    try:
        any_pb2.Any.FromString(bytes(data))
    except DecodeError:
        raise ValueError("protobuf data must be a serialized google.protobuf.Any") from None
    return bytes(data)


def decode_payload(data: bytes, data_type: DataType) -> Payload:
    """The inverse of :func:`encode_payload`: payload bytes to a value.

    Raises:
        ValueError: ``json`` bytes that are not JSON, or ``text`` bytes that are not UTF-8.
    """
    if data_type is DataType.JSON:
        return json.loads(data)
    if data_type is DataType.TEXT:
        return data.decode("utf-8")
    return data


_json_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode

__all__ = [
    "Ack",
    "AckErrorDetail",
    "Connected",
    "Disconnected",
    "Downstream",
    "GroupMessage",
    "Payload",
    "Pong",
    "ServerMessage",
    "decode_payload",
    "encode_payload",
]
