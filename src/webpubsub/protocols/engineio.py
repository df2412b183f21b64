"""Engine.IO v4 packets and payloads (socketio spec 2.2), pure.

The service relays Engine.IO packets as text: ``<type><data>`` for text packets and
``b<base64>`` for a binary message, as polling payloads carry them (packets joined by
``\\x1e``). That is also the form the app server sends and receives over its tunnel
(``:send`` bodies and ``message`` events are payloads), so a packet goes through unchanged;
only WebSocket frames differ: one packet per frame, binary messages as binary frames.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from .frames import binary_frame, text_frame

OPEN, CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = "0", "1", "2", "3", "4", "5", "6"
TYPES = frozenset("0123456")
SEPARATOR = "\x1e"
PROBE = "probe"

# Engine.IO's handshake errors (code, message), as its server answers them (400 JSON).
UNKNOWN_TRANSPORT = (0, "Transport unknown")
UNKNOWN_SID = (1, "Session ID unknown")
BAD_HANDSHAKE_METHOD = (2, "Bad handshake method")
BAD_REQUEST = (3, "Bad request")
FORBIDDEN = (4, "Forbidden")
UNSUPPORTED_PROTOCOL_VERSION = (5, "Unsupported protocol version")


class EngineIOError(ValueError):
    """A payload or packet that is not Engine.IO v4."""


def error_body(error: tuple[int, str]) -> bytes:
    code, message = error
    return json.dumps({"code": code, "message": message}, separators=(",", ":")).encode()


def split_payload(body: bytes) -> list[str]:
    """The packets of a polling payload (a POST body or a ``:send`` body)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise EngineIOError("the payload is not UTF-8") from None
    packets = text.split(SEPARATOR)
    for packet in packets:
        check_packet(packet)
    return packets


def check_packet(packet: str) -> None:
    if not packet:
        raise EngineIOError("empty packet")
    if packet[0] == "b":
        try:
            base64.b64decode(packet[1:], validate=True)
        except (binascii.Error, ValueError):
            raise EngineIOError("a binary packet that is not base64") from None
    elif packet[0] not in TYPES:
        raise EngineIOError(f"unknown packet type {packet[0]!r}")


def join_payload(packets: list[str]) -> bytes:
    return SEPARATOR.join(packets).encode("utf-8")


def from_frame(data: bytes, is_text: bool) -> str:
    """A WebSocket frame as a packet: text as is, a binary message as ``b<base64>``."""
    if is_text:
        try:
            packet = data.decode("utf-8")
        except UnicodeDecodeError:
            raise EngineIOError("a text frame that is not UTF-8") from None
        check_packet(packet)
        if packet[0] == "b":
            raise EngineIOError("a binary packet in a text frame")
        return packet
    return "b" + base64.b64encode(data).decode("ascii")


def to_frame(packet: str) -> tuple[bool, bytes]:
    """A packet as a WebSocket frame's (is_binary, payload)."""
    if packet[:1] == "b":
        return True, base64.b64decode(packet[1:])
    return False, packet.encode("utf-8")


def ws_frames(packets: list[str]) -> bytes:
    """Packets as the WebSocket frames that carry them, one frame each, joined."""
    out = []
    for packet in packets:
        binary, payload = to_frame(packet)
        out.append(binary_frame(payload) if binary else text_frame(payload))
    return b"".join(out)


def open_packet(handshake: dict[str, Any], upgrades: list[str]) -> str:
    """The open packet, the app server's handshake with the transports this one may take."""
    return OPEN + json.dumps({**handshake, "upgrades": upgrades}, separators=(",", ":"))


def is_binary(packet: str) -> bool:
    return packet[:1] == "b"
