"""Server-to-client WebSocket frames, serialized once and written to many connections.

Server frames are never masked and the service declines extensions (permessage-deflate
would make bytes differ per connection), so one serialized frame fits every recipient.
"""

from __future__ import annotations

from websockets.frames import Frame, Opcode


def text_frame(payload: bytes) -> bytes:
    """A complete unmasked text frame carrying UTF-8 ``payload``."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


def binary_frame(payload: bytes) -> bytes:
    """A complete unmasked binary frame."""
    return Frame(Opcode.BINARY, payload).serialize(mask=False)
