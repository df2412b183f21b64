"""Reliable subprotocols: sequence ids, the resend buffer and recovery (spec 4.7).

Every data message to a reliable connection gets the next ``sequenceId`` and stays in the
resend buffer until the client acknowledges it (``sequenceAck`` is cumulative). When the
socket drops, the logical connection waits for the client to come back with its reconnection
token; it then gets every unacknowledged message again, in order, before anything new.
"""

from __future__ import annotations

import hmac
import secrets
from collections import deque
from collections.abc import Iterator

MAX_MESSAGES = 1000  # spec 6: reliable buffer 1,000 messages or 16 MB per connection
MAX_BYTES = 16 * 1024 * 1024
RECOVERY_WINDOW = 30.0  # seconds; spec 6: retention >= 30 s after a drop

Pieces = tuple[bytes, ...]


class ResendBuffer:
    """Unacknowledged messages of one connection, bounded in count and bytes."""

    __slots__ = ("_entries", "max_bytes", "max_messages", "next_id", "size")

    def __init__(self, max_messages: int = MAX_MESSAGES, max_bytes: int = MAX_BYTES) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.next_id = 1
        self.size = 0
        # (sequence id, frames, size, TTL expiry or None)
        self._entries: deque[tuple[int, Pieces, int, float | None]] = deque()

    def take_id(self) -> int:
        sequence_id = self.next_id
        self.next_id += 1
        return sequence_id

    def push(self, sequence_id: int, pieces: Pieces, expires: float | None = None) -> bool:
        """Keep a sent message; False when the buffer is over its bounds (unrecoverable).

        ``expires``: the message's TTL end (``time.time()``), checked when it is replayed."""
        size = sum(len(p) for p in pieces)
        self._entries.append((sequence_id, pieces, size, expires))
        self.size += size
        return len(self._entries) <= self.max_messages and self.size <= self.max_bytes

    def ack(self, sequence_id: int) -> None:
        """Forget every message up to and including ``sequence_id``."""
        entries = self._entries
        while entries and entries[0][0] <= sequence_id:
            self.size -= entries.popleft()[2]

    def pending(self) -> Iterator[tuple[Pieces, float | None]]:
        """Unacknowledged messages in order, with their TTL end (None: none)."""
        for _, pieces, _, expires in self._entries:
            yield pieces, expires

    def entries(self) -> Iterator[tuple[int, Pieces, float | None]]:
        """Unacknowledged messages with their sequence ids, in order."""
        for sequence_id, pieces, _, expires in self._entries:
            yield sequence_id, pieces, expires

    def __len__(self) -> int:
        return len(self._entries)


class Recovery:
    """The reliable part of a connection: its buffer, token and whether a socket is attached."""

    __slots__ = ("attached", "buffer", "deadline", "token")

    def __init__(self, buffer: ResendBuffer | None = None) -> None:
        self.buffer = buffer or ResendBuffer()
        self.token = secrets.token_urlsafe(32)
        self.attached = True
        self.deadline: float | None = None

    def check_token(self, token: str) -> bool:
        return hmac.compare_digest(self.token.encode(), token.encode("utf-8", "replace"))
