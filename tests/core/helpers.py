"""Test doubles for the pure core: a transport that records what the core writes."""

from __future__ import annotations

import json
import time
from typing import Any

from websockets.frames import Opcode

from webpubsub.core.connection import Codec, Connection
from webpubsub.protocols import JSON, RAW


class RecordingTransport:
    """Keeps every frame the core queues and the close it asks for."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def send_expiring(self, pieces: tuple[bytes, ...], expires: float) -> None:
        if time.time() < expires:
            self.frames.extend(pieces)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def payloads(self) -> list[tuple[Opcode, bytes]]:
        """(opcode, payload) of each recorded frame (server frames are unmasked)."""
        out = []
        for frame in self.frames:
            opcode = Opcode(frame[0] & 0x0F)
            length = frame[1] & 0x7F
            offset = 2
            if length == 126:
                length = int.from_bytes(frame[2:4], "big")
                offset = 4
            elif length == 127:
                length = int.from_bytes(frame[2:10], "big")
                offset = 10
            out.append((opcode, frame[offset : offset + length]))
        return out

    def messages(self) -> list[Any]:
        """Recorded frames parsed as JSON envelopes."""
        return [json.loads(payload) for _, payload in self.payloads()]

    def take(self) -> list[Any]:
        messages = self.messages()
        self.frames.clear()
        return messages


def make_connection(
    hub: str = "chat",
    *,
    user_id: str | None = None,
    roles: tuple[str, ...] = (),
    codec: Codec = JSON,
    connection_id: str | None = None,
) -> tuple[Connection, RecordingTransport]:
    transport = RecordingTransport()
    conn = Connection(
        hub, codec, transport, user_id=user_id, roles=roles, connection_id=connection_id
    )
    return conn, transport


__all__ = ["RAW", "RecordingTransport", "make_connection"]
