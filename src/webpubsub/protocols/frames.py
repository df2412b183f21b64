"""Server-to-client WebSocket frames, serialized once and written to many connections.

Server frames are never masked and the service declines extensions (permessage-deflate
would make bytes differ per connection), so one serialized frame fits every recipient.
"""

from __future__ import annotations

import struct

OP_TEXT = 0x1
OP_BINARY = 0x2


def header(opcode: int, length: int) -> bytes:
    """The header of a final, unmasked frame carrying ``length`` payload bytes (RFC 6455 5.2)."""
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def text_frame(payload: bytes) -> bytes:
    """A complete unmasked text frame carrying UTF-8 ``payload``."""
    return header(OP_TEXT, len(payload)) + payload


def binary_frame(payload: bytes) -> bytes:
    """A complete unmasked binary frame."""
    return header(OP_BINARY, len(payload)) + payload
