"""The app-server tunnel's frames (socketio spec 4.2): bytes in, messages out, and back.

One WebSocket binary message is one tunnel message: a ``uint32`` little-endian length ``N``,
then ``N`` bytes of MessagePack holding the array ``[Type, Json, Content]``: the message type,
the message object as JSON text (without its ``Content``), and the body bytes or nil.

MessagePack is hand-written here, and only the subset the tunnel uses: an array of an
integer, a string and binary-or-nil. That is every shape ``@msgpack/msgpack`` produces for a
tunnel message, it takes 80 lines, and a decoder that knows nothing else cannot be made to
build maps, extension types or deep nests by a peer (README, "Dependencies").

Errors are :class:`~webpubsub.core.errors.ProtocolViolation` carrying the close code for the
tunnel socket: 1003 for a text frame, 1009 for a frame over the size cap, 1008 otherwise.
"""

from __future__ import annotations

import enum
import json
import struct
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ProtocolViolation

LENGTH = struct.Struct("<I")
Headers = dict[str, list[str]]


class MessageType(enum.IntEnum):
    """Tunnel message types (socketio spec 4.2; the SDK's ``messages.js``)."""

    HTTP_REQUEST = 1
    HTTP_RESPONSE = 2
    SERVICE_STATUS = 5
    CONNECTION_RECONNECT = 6
    CONNECTION_CLOSE = 7
    CONNECTION_REBALANCE = 8
    CONNECTION_CONNECTED = 10


class CloseCode(enum.IntEnum):
    """How the service closes a tunnel socket that sent what it must not."""

    UNSUPPORTED_DATA = 1003  # a text frame: the tunnel is binary only
    POLICY_VIOLATION = 1008  # not a tunnel message
    MESSAGE_TOO_BIG = 1009


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """An HTTP request carried by the tunnel: CloudEvents to the app server, REST from it."""

    ack_id: int
    method: str
    url: str
    headers: Headers = field(default_factory=dict)
    content: bytes = b""
    local_routing: bool = False
    channel_name: str = ""

    type = MessageType.HTTP_REQUEST

    def fields(self) -> dict[str, Any]:
        return {
            "AckId": self.ack_id,
            "LocalRouting": self.local_routing,
            "ChannelName": self.channel_name,
            "HttpMethod": self.method,
            "Url": self.url,
            "Headers": self.headers,
        }


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """The answer (or one piece of it, while ``not_completed``) to the other side's request."""

    ack_id: int
    status_code: int
    headers: Headers = field(default_factory=dict)
    content: bytes = b""
    not_completed: bool = False
    local_routing: bool = False
    channel_name: str = ""

    type = MessageType.HTTP_RESPONSE

    def fields(self) -> dict[str, Any]:
        return {
            "AckId": self.ack_id,
            "LocalRouting": self.local_routing,
            "StatusCode": self.status_code,
            "ChannelName": self.channel_name,
            "NotCompleted": self.not_completed,
            "Headers": self.headers,
        }


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """A note from the service; the SDK logs and ignores it (our idle-tunnel keepalive)."""

    message: str = ""
    type = MessageType.SERVICE_STATUS

    def fields(self) -> dict[str, Any]:
        return {"Message": self.message}


@dataclass(frozen=True, slots=True)
class ConnectionClose:
    """The service ends this tunnel socket; the SDK does not reconnect it."""

    message: str = ""
    type = MessageType.CONNECTION_CLOSE

    def fields(self) -> dict[str, Any]:
        return {"Message": self.message}


@dataclass(frozen=True, slots=True)
class ConnectionConnected:
    """The first frame after the upgrade; ``useAzureSocketIO`` waits for it."""

    connection_id: str
    user_id: str = ""
    reconnection_token: str = ""
    type = MessageType.CONNECTION_CONNECTED

    def fields(self) -> dict[str, Any]:
        return {
            "ConnectionId": self.connection_id,
            "UserId": self.user_id,
            "ReconnectionToken": self.reconnection_token,
        }


Message = HttpRequest | HttpResponse | ServiceStatus | ConnectionClose | ConnectionConnected


def encode(message: Message) -> bytes:
    """The bytes of one tunnel message (one WebSocket binary message)."""
    fields = message.fields()
    fields["Type"] = int(message.type)
    text = json.dumps(fields, separators=(",", ":"), ensure_ascii=False)
    content = message.content if isinstance(message, HttpRequest | HttpResponse) else None
    packed = _pack(int(message.type), text, content)
    return LENGTH.pack(len(packed)) + packed


def decode(data: bytes, *, is_text: bool = False, max_size: int = 1 << 20) -> Message:
    """One tunnel message (the service takes only HttpRequest and HttpResponse from an app
    server; the rest is for clients of the tunnel, such as the tests').

    Raises ProtocolViolation (with the close code) for anything that is not one.
    """
    if is_text:
        raise ProtocolViolation(
            "The tunnel carries binary frames only.", CloseCode.UNSUPPORTED_DATA
        )
    if len(data) > max_size + LENGTH.size:
        raise ProtocolViolation(
            f"A tunnel message is larger than {max_size} bytes.", CloseCode.MESSAGE_TOO_BIG
        )
    if len(data) < LENGTH.size:
        raise ProtocolViolation("A tunnel message is shorter than its length prefix.")
    (length,) = LENGTH.unpack_from(data)
    if length != len(data) - LENGTH.size:
        raise ProtocolViolation(
            f"A tunnel message declares {length} bytes but carries {len(data) - LENGTH.size}."
        )
    kind, text, content = _unpack(data, LENGTH.size)
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolViolation("The JSON of a tunnel message is not valid JSON.") from None
    if not isinstance(fields, dict):
        raise ProtocolViolation("The JSON of a tunnel message must be an object.")
    if kind == MessageType.HTTP_REQUEST:
        return HttpRequest(
            _int(fields, "AckId"),
            _str(fields, "HttpMethod"),
            _str(fields, "Url"),
            _headers(fields),
            content or b"",
            fields.get("LocalRouting") is True,
            _str(fields, "ChannelName", ""),
        )
    if kind == MessageType.HTTP_RESPONSE:
        return HttpResponse(
            _int(fields, "AckId"),
            _int(fields, "StatusCode"),
            _headers(fields),
            content or b"",
            fields.get("NotCompleted") is True,
            fields.get("LocalRouting") is True,
            _str(fields, "ChannelName", ""),
        )
    if kind == MessageType.SERVICE_STATUS:
        return ServiceStatus(_str(fields, "Message", ""))
    if kind == MessageType.CONNECTION_CLOSE:
        return ConnectionClose(_str(fields, "Message", ""))
    if kind == MessageType.CONNECTION_CONNECTED:
        return ConnectionConnected(
            _str(fields, "ConnectionId"),
            _str(fields, "UserId", ""),
            _str(fields, "ReconnectionToken", ""),
        )
    raise ProtocolViolation(f"Unknown tunnel message type {kind}.")


# -- fields ------------------------------------------------------------------------------


def _int(fields: dict[str, Any], name: str) -> int:
    value = fields.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**53:
        raise ProtocolViolation(f"'{name}' of a tunnel message must be a non-negative integer.")
    return value


def _str(fields: dict[str, Any], name: str, default: str | None = None) -> str:
    value = fields.get(name, default)
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        raise ProtocolViolation(f"'{name}' of a tunnel message must be a string.")
    return value


def _headers(fields: dict[str, Any]) -> Headers:
    value = fields.get("Headers")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolViolation("'Headers' of a tunnel message must map names to arrays.")
    headers: Headers = {}
    for name, values in value.items():
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ProtocolViolation(f"Header '{name[:40]}' must be an array of strings.")
        headers[name] = values
    return headers


# -- the MessagePack subset ----------------------------------------------------------------


def _pack(kind: int, text: str, content: bytes | None) -> bytes:
    out = bytearray(b"\x93")  # fixarray of 3
    out += bytes((kind,)) if kind < 0x80 else b"\xcc" + bytes((kind,))
    raw = text.encode("utf-8")
    n = len(raw)
    if n < 32:
        out.append(0xA0 | n)
    elif n < 0x100:
        out += b"\xd9" + bytes((n,))
    elif n < 0x10000:
        out += b"\xda" + n.to_bytes(2, "big")
    else:
        out += b"\xdb" + n.to_bytes(4, "big")
    out += raw
    if content is None:
        out.append(0xC0)
    else:
        n = len(content)
        if n < 0x100:
            out += b"\xc4" + bytes((n,))
        elif n < 0x10000:
            out += b"\xc5" + n.to_bytes(2, "big")
        else:
            out += b"\xc6" + n.to_bytes(4, "big")
        out += content
    return bytes(out)


_INTS = {0xCC: (1, False), 0xCD: (2, False), 0xCE: (4, False), 0xCF: (8, False)}
_INTS |= {0xD0: (1, True), 0xD1: (2, True), 0xD2: (4, True), 0xD3: (8, True)}
_STRS = {0xD9: 1, 0xDA: 2, 0xDB: 4}
_BINS = {0xC4: 1, 0xC5: 2, 0xC6: 4}


class _Reader:
    def __init__(self, data: bytes, pos: int) -> None:
        self.data, self.pos = data, pos

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise ProtocolViolation("A tunnel message ends inside a MessagePack value.")
        chunk, self.pos = self.data[self.pos : end], end
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def size(self, width: int) -> int:
        return int.from_bytes(self.take(width), "big")


def _unpack(data: bytes, pos: int) -> tuple[int, str, bytes | None]:
    """``[int, str, bin | nil]`` and nothing else, the whole message consumed."""
    r = _Reader(data, pos)
    head = r.byte()
    if head == 0x93:
        count = 3
    elif head == 0xDC:
        count = r.size(2)
    elif head == 0xDD:
        count = r.size(4)
    else:
        count = -1
    if count != 3:
        raise ProtocolViolation("A tunnel message must be a MessagePack array of 3 items.")
    head = r.byte()
    if head < 0x80:
        kind = head
    elif head in _INTS:
        width, signed = _INTS[head]
        kind = int.from_bytes(r.take(width), "big", signed=signed)
    else:
        raise ProtocolViolation("The type of a tunnel message must be an integer.")
    head = r.byte()
    if 0xA0 <= head <= 0xBF:
        length = head & 0x1F
    elif head in _STRS:
        length = r.size(_STRS[head])
    else:
        raise ProtocolViolation("The JSON of a tunnel message must be a MessagePack string.")
    try:
        text = r.take(length).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation("The JSON of a tunnel message is not UTF-8.") from None
    head = r.byte()
    content: bytes | None
    if head == 0xC0:
        content = None
    elif head in _BINS:
        content = r.take(r.size(_BINS[head]))
    else:
        raise ProtocolViolation("The content of a tunnel message must be binary or nil.")
    if r.pos != len(data):
        raise ProtocolViolation("A tunnel message has bytes after its MessagePack array.")
    return kind, text, content
