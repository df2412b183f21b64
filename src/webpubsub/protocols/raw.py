"""Simple WebSocket clients (no subprotocol): payload frames only, no envelopes (spec 4.2)."""

from __future__ import annotations

from ..core.connection import WithoutExtras
from ..core.errors import ClientError
from ..core.message import DataType, Message
from ..core.requests import ClientRequest, SendEvent
from .frames import binary_frame, text_frame


class RawCodec(WithoutExtras):
    """Frames in become ``message`` user events; messages out are bare payloads."""

    subprotocol: str | None = None
    is_pubsub = False
    is_reliable = False

    def encode_message(self, message: Message) -> bytes:
        if message.stream is not None and message.stream.end:
            return b""  # a stream's terminal frame has no payload: nothing for a simple client
        if message.data_type in (DataType.TEXT, DataType.JSON):
            return text_frame(message.data)
        return binary_frame(message.data)

    def encode_ack(self, ack_id: int, error: ClientError | None) -> bytes | None:
        return None

    def encode_connected(
        self, connection_id: str, user_id: str | None, reconnection_token: str | None
    ) -> bytes | None:
        return None

    def encode_disconnected(self, reason: str) -> bytes | None:
        return None

    def encode_pong(self) -> bytes | None:
        return None

    def sequence(self, encoded: bytes, sequence_id: int) -> tuple[bytes, ...]:
        raise NotImplementedError("simple clients have no sequence ids")

    def decode(self, data: bytes, is_text: bool) -> ClientRequest:
        return SendEvent("message", data, DataType.TEXT if is_text else DataType.BINARY)

    def peek_ack_id(self, data: bytes, is_text: bool) -> int | None:
        return None  # simple clients have no acks

    def __repr__(self) -> str:
        return "RawCodec()"


RAW = RawCodec()
