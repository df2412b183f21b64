"""MQTT wire primitives: integers, strings, variable byte integers, 5.0 properties, errors.

MQTT 3.1.1 section 1.5 and MQTT 5.0 sections 1.5 and 2.2.2. Pure functions over bytes; a
reader raises ``MqttError`` with the reason code the server answers with (0x81 Malformed
Packet, 0x82 Protocol Error, ...).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field, fields
from typing import Any


class Reason(enum.IntEnum):
    """MQTT 5.0 reason codes used by this service (MQTT 5.0 section 2.4)."""

    SUCCESS = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


class MqttError(Exception):
    """A packet the server cannot accept; ``reason`` is the MQTT 5.0 reason code to answer with.

    For 3.1.1 connections the endpoint closes the socket (3.1.1 has no server DISCONNECT);
    ``reason`` 0x84 on a CONNECT means "answer with a 3.1.1 CONNACK return code 1".
    """

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def malformed(message: str) -> MqttError:
    return MqttError(Reason.MALFORMED_PACKET, message)


# -- primitives (MQTT 5.0 section 1.5) --------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """A Variable Byte Integer (1-4 bytes, at most 268,435,455)."""
    if not 0 <= value <= 268_435_455:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_str(value: str) -> bytes:
    data = value.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ValueError("UTF-8 string longer than 65,535 bytes")
    return struct.pack("!H", len(data)) + data


def encode_bin(value: bytes) -> bytes:
    if len(value) > 0xFFFF:
        raise ValueError("binary data longer than 65,535 bytes")
    return struct.pack("!H", len(value)) + value


class Reader:
    """Reads primitives from one packet's body; running past the end is a malformed packet."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise malformed("packet ends early")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = struct.unpack("!H", self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = struct.unpack("!I", self.take(4))[0]
        return value

    def varint(self) -> int:
        value = 0
        for shift in (0, 7, 14, 21):
            byte = self.byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
        raise malformed("variable byte integer longer than 4 bytes")

    def bin(self) -> bytes:
        return self.take(self.u16())

    def str(self) -> str:
        """A UTF-8 Encoded String: well-formed UTF-8 without U+0000 (MQTT 5.0 1.5.4)."""
        raw = self.bin()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise malformed("string is not valid UTF-8") from None
        if "\x00" in text:
            raise malformed("string contains U+0000")
        return text


# -- properties (MQTT 5.0 section 2.2.2) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Properties:
    """MQTT 5.0 properties; None means absent. Repeatable ones are tuples."""

    payload_format_indicator: int | None = None
    message_expiry_interval: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation_data: bytes | None = None
    subscription_identifiers: tuple[int, ...] = ()
    session_expiry_interval: int | None = None
    assigned_client_identifier: str | None = None
    server_keep_alive: int | None = None
    authentication_method: str | None = None
    authentication_data: bytes | None = None
    request_problem_information: int | None = None
    will_delay_interval: int | None = None
    request_response_information: int | None = None
    response_information: str | None = None
    server_reference: str | None = None
    reason_string: str | None = None
    receive_maximum: int | None = None
    topic_alias_maximum: int | None = None
    topic_alias: int | None = None
    maximum_qos: int | None = None
    retain_available: int | None = None
    user_properties: tuple[tuple[str, str], ...] = field(default=())
    maximum_packet_size: int | None = None
    wildcard_subscription_available: int | None = None
    subscription_identifier_available: int | None = None
    shared_subscription_available: int | None = None


NO_PROPERTIES = Properties()

# identifier -> (field name, kind); kinds: byte, u16, u32, varint, str, bin, pair
_TABLE: dict[int, tuple[str, str]] = {
    0x01: ("payload_format_indicator", "byte"),
    0x02: ("message_expiry_interval", "u32"),
    0x03: ("content_type", "str"),
    0x08: ("response_topic", "str"),
    0x09: ("correlation_data", "bin"),
    0x0B: ("subscription_identifiers", "varint"),
    0x11: ("session_expiry_interval", "u32"),
    0x12: ("assigned_client_identifier", "str"),
    0x13: ("server_keep_alive", "u16"),
    0x15: ("authentication_method", "str"),
    0x16: ("authentication_data", "bin"),
    0x17: ("request_problem_information", "byte"),
    0x18: ("will_delay_interval", "u32"),
    0x19: ("request_response_information", "byte"),
    0x1A: ("response_information", "str"),
    0x1C: ("server_reference", "str"),
    0x1F: ("reason_string", "str"),
    0x21: ("receive_maximum", "u16"),
    0x22: ("topic_alias_maximum", "u16"),
    0x23: ("topic_alias", "u16"),
    0x24: ("maximum_qos", "byte"),
    0x25: ("retain_available", "byte"),
    0x26: ("user_properties", "pair"),
    0x27: ("maximum_packet_size", "u32"),
    0x28: ("wildcard_subscription_available", "byte"),
    0x29: ("subscription_identifier_available", "byte"),
    0x2A: ("shared_subscription_available", "byte"),
}
_IDS = {name: (ident, kind) for ident, (name, kind) in _TABLE.items()}
_REPEATABLE = {"subscription_identifiers", "user_properties"}
_ORDER = [f.name for f in fields(Properties)]


def _encode_value(kind: str, value: Any) -> bytes:
    if kind == "byte":
        return bytes((value,))
    if kind == "u16":
        return struct.pack("!H", value)
    if kind == "u32":
        return struct.pack("!I", value)
    if kind == "varint":
        return encode_varint(value)
    if kind == "str":
        return encode_str(value)
    if kind == "bin":
        return encode_bin(value)
    name, text = value  # pair
    return encode_str(name) + encode_str(text)


def encode_properties(props: Properties) -> bytes:
    """The Property Length followed by the properties, in a fixed order."""
    if props is NO_PROPERTIES:
        return b"\x00"
    out = bytearray()
    for name in _ORDER:
        value = getattr(props, name)
        ident, kind = _IDS[name]
        if name in _REPEATABLE:
            for item in value:
                out += encode_varint(ident) + _encode_value(kind, item)
        elif value is not None:
            out += encode_varint(ident) + _encode_value(kind, value)
    return encode_varint(len(out)) + bytes(out)


def read_properties(reader: Reader) -> Properties:
    """Properties at the reader's position; an unknown or repeated identifier is an error."""
    length = reader.varint()
    end = reader.pos + length
    if end > len(reader.data):
        raise malformed("property length exceeds the packet")
    values: dict[str, Any] = {}
    subscription_ids: list[int] = []
    user_properties: list[tuple[str, str]] = []
    while reader.pos < end:
        ident = reader.varint()
        entry = _TABLE.get(ident)
        if entry is None:
            raise malformed(f"unknown property identifier 0x{ident:02x}")
        name, kind = entry
        if kind == "byte":
            value: Any = reader.byte()
        elif kind == "u16":
            value = reader.u16()
        elif kind == "u32":
            value = reader.u32()
        elif kind == "varint":
            value = reader.varint()
        elif kind == "str":
            value = reader.str()
        elif kind == "bin":
            value = reader.bin()
        else:
            value = (reader.str(), reader.str())
        if name == "user_properties":
            user_properties.append(value)
        elif name == "subscription_identifiers":
            subscription_ids.append(value)
        elif name in values:
            raise MqttError(Reason.PROTOCOL_ERROR, f"property {name} appears twice")
        else:
            values[name] = value
    if reader.pos != end:
        raise malformed("property overruns its length")
    if not values and not subscription_ids and not user_properties:
        return NO_PROPERTIES
    return Properties(
        **values,
        subscription_identifiers=tuple(subscription_ids),
        user_properties=tuple(user_properties),
    )
