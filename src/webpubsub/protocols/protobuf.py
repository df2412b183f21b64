"""``protobuf.webpubsub.azure.v1`` and its reliable variant: binary frames (spec 4.8).

Each frame carries one ``UpstreamMessage`` (client to service) or ``DownstreamMessage``
(service to client) of ``proto/webpubsub.proto``. JSON payloads travel as ``json_data``, the
way the official JS and .NET protobuf clients send and expect them.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from ..core import jsontext
from ..core.errors import ClientError, InvalidRequest, ProtocolViolation
from ..core.message import DataType, Message, Source
from ..core.requests import (
    ClientRequest,
    JoinGroup,
    LeaveGroup,
    Ping,
    SendEvent,
    SendToGroup,
    SequenceAck,
    Unsupported,
)
from .downstream import (
    Ack,
    AckErrorDetail,
    Connected,
    Disconnected,
    Downstream,
    GroupMessage,
    Pong,
    ServerMessage,
)
from .frames import OP_BINARY, binary_frame, header
from .proto.webpubsub_pb2 import DownstreamMessage, MessageData, UpstreamMessage

SUBPROTOCOL = "protobuf.webpubsub.azure.v1"
RELIABLE_SUBPROTOCOL = "protobuf.reliable.webpubsub.azure.v1"

_DATA_MESSAGE_TAG = b"\x12"  # DownstreamMessage.data_message = 2, length-delimited
_SEQUENCE_ID_TAG = b"\x20"  # DataMessage.sequence_id = 4, varint


def varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def to_message_data(data: bytes, data_type: DataType) -> MessageData:
    if data_type is DataType.TEXT:
        return MessageData(text_data=data.decode("utf-8", "replace"))
    if data_type is DataType.JSON:
        return MessageData(json_data=data.decode("utf-8", "replace"))
    if data_type is DataType.PROTOBUF:
        try:
            return MessageData(protobuf_data=any_pb2.Any.FromString(data))
        except DecodeError:
            return MessageData(binary_data=data)
    return MessageData(binary_data=data)


def from_message_data(data: MessageData, ack_id: int | None) -> tuple[bytes, DataType]:
    kind = data.WhichOneof("data")
    if kind == "text_data":
        return data.text_data.encode("utf-8"), DataType.TEXT
    if kind == "binary_data":
        return data.binary_data, DataType.BINARY
    if kind == "protobuf_data":
        return data.protobuf_data.SerializeToString(), DataType.PROTOBUF
    if kind == "json_data":
        try:
            jsontext.check(data.json_data)
        except jsontext.Refused as exc:
            raise InvalidRequest(f"'json_data' is not valid JSON: {exc}", ack_id) from None
        except ValueError:
            raise InvalidRequest("'json_data' is not valid JSON.", ack_id) from None
        return data.json_data.encode("utf-8"), DataType.JSON
    raise InvalidRequest("The message has no data.", ack_id)


def _ack_id(message: Any) -> int | None:
    return int(message.ack_id) if message.HasField("ack_id") else None


class ProtobufCodec:
    """Encoder/decoder of the protobuf subprotocol (non-reliable)."""

    subprotocol: str | None = SUBPROTOCOL
    is_pubsub = True
    is_reliable = False

    # -- downstream -------------------------------------------------------------------------

    def data_message(self, message: Message) -> bytes:
        """The serialized ``DataMessage`` of a message, without a sequence id."""
        data = DownstreamMessage.DataMessage(
            data=to_message_data(message.data, message.data_type),
        )
        setattr(data, "from", message.source.value)  # `from` is a Python keyword
        if message.source is Source.GROUP and message.group is not None:
            data.group = message.group
        return data.SerializeToString()

    def encode_message(self, message: Message) -> bytes:
        inner = self.data_message(message)
        return binary_frame(_DATA_MESSAGE_TAG + varint(len(inner)) + inner)

    def sequence(self, encoded: bytes, sequence_id: int) -> tuple[bytes, ...]:
        raise NotImplementedError("protobuf.webpubsub.azure.v1 has no sequence ids")

    def encode_ack(self, ack_id: int, error: ClientError | None) -> bytes | None:
        ack = DownstreamMessage.AckMessage(ack_id=ack_id, success=error is None)
        if error is not None:
            ack.error.name = error.name
            ack.error.message = error.message
        return _frame(DownstreamMessage(ack_message=ack))

    def encode_connected(
        self, connection_id: str, user_id: str | None, reconnection_token: str | None
    ) -> bytes | None:
        connected = DownstreamMessage.SystemMessage.ConnectedMessage(
            connection_id=connection_id,
            user_id=user_id or "",
            reconnection_token=reconnection_token or "",
        )
        system = DownstreamMessage.SystemMessage(connected_message=connected)
        return _frame(DownstreamMessage(system_message=system))

    def encode_disconnected(self, reason: str) -> bytes | None:
        disconnected = DownstreamMessage.SystemMessage.DisconnectedMessage(reason=reason)
        system = DownstreamMessage.SystemMessage(disconnected_message=disconnected)
        return _frame(DownstreamMessage(system_message=system))

    def encode_pong(self) -> bytes | None:
        return _frame(DownstreamMessage(pong_message=DownstreamMessage.PongMessage()))

    # -- upstream ---------------------------------------------------------------------------

    def decode(self, data: bytes, is_text: bool) -> ClientRequest:
        if is_text:
            raise ProtocolViolation("The protobuf subprotocol uses binary frames.", code=1003)
        try:
            upstream = UpstreamMessage.FromString(data)
        except DecodeError:
            raise ProtocolViolation("The message is not a valid UpstreamMessage.") from None
        kind = upstream.WhichOneof("message")
        if kind == "join_group_message":
            join = upstream.join_group_message
            return JoinGroup(join.group, _ack_id(join))
        if kind == "leave_group_message":
            leave = upstream.leave_group_message
            return LeaveGroup(leave.group, _ack_id(leave))
        if kind == "send_to_group_message":
            send = upstream.send_to_group_message
            ack_id = _ack_id(send)
            if send.HasField("stream"):
                return Unsupported("stream", ack_id)
            payload, data_type = from_message_data(send.data, ack_id)
            return SendToGroup(send.group, payload, data_type, ack_id, send.no_echo)
        if kind == "event_message":
            event = upstream.event_message
            ack_id = _ack_id(event)
            if not event.event:
                raise InvalidRequest("'event' must be a non-empty string.", ack_id)
            payload, data_type = from_message_data(event.data, ack_id)
            return SendEvent(event.event, payload, data_type, ack_id)
        if kind == "ping_message":
            return Ping()
        if kind == "sequence_ack_message":
            return SequenceAck(int(upstream.sequence_ack_message.sequence_id))
        if kind is None:
            raise ProtocolViolation("The UpstreamMessage has no message set.")
        return Unsupported(kind)

    def peek_ack_id(self, data: bytes, is_text: bool) -> int | None:
        """The ackId of a frame that will not be decoded in full (throttled)."""
        if is_text:
            return None
        try:
            upstream = UpstreamMessage.FromString(data)
        except DecodeError:
            return None
        kind = upstream.WhichOneof("message")
        if kind in (
            "join_group_message",
            "leave_group_message",
            "send_to_group_message",
            "event_message",
        ):
            return _ack_id(getattr(upstream, kind))
        return None

    # -- client side: requests out, service messages in -----------------------------------

    text_frames = False
    """Frames of this subprotocol are binary frames (clients send with opcode 2)."""

    def encode_request(self, request: ClientRequest) -> bytes:
        """The serialized ``UpstreamMessage`` a client sends for ``request`` (spec 4.8).

        JSON payloads travel as ``json_data``, as the official protobuf clients send them.

        Raises:
            TypeError: for a request clients cannot send (``Unsupported``).
        """
        upstream = UpstreamMessage()
        match request:
            case JoinGroup(group, ack_id):
                join = upstream.join_group_message
                join.group = group
                if ack_id is not None:
                    join.ack_id = ack_id
            case LeaveGroup(group, ack_id):
                leave = upstream.leave_group_message
                leave.group = group
                if ack_id is not None:
                    leave.ack_id = ack_id
            case SendToGroup(group, data, data_type, ack_id, no_echo):
                send = upstream.send_to_group_message
                send.group = group
                send.data.CopyFrom(to_message_data(data, data_type))
                send.no_echo = no_echo
                if ack_id is not None:
                    send.ack_id = ack_id
            case SendEvent(event, data, data_type, ack_id):
                event_message = upstream.event_message
                event_message.event = event
                event_message.data.CopyFrom(to_message_data(data, data_type))
                if ack_id is not None:
                    event_message.ack_id = ack_id
            case SequenceAck(sequence_id):
                upstream.sequence_ack_message.sequence_id = sequence_id
            case Ping():
                upstream.ping_message.SetInParent()
            case _:
                raise TypeError(f"clients cannot send {request!r}")
        return upstream.SerializeToString()

    def decode_downstream(self, data: bytes | str) -> Downstream | None:
        """Decode one service-to-client ``DownstreamMessage`` (spec 4.8).

        Returns None for messages this client does not know (streaming acks, a data
        message without data or with an unknown ``from``), which clients skip.

        Raises:
            ProtocolViolation: a text frame, or bytes that are no ``DownstreamMessage``.
        """
        if isinstance(data, str):
            raise ProtocolViolation("The protobuf subprotocol uses binary frames.", code=1003)
        try:
            downstream = DownstreamMessage.FromString(data)
        except DecodeError:
            raise ProtocolViolation("The message is not a valid DownstreamMessage.") from None
        kind = downstream.WhichOneof("message")
        if kind == "data_message":
            return _data_message(downstream.data_message)
        if kind == "ack_message":
            ack = downstream.ack_message
            error = None
            if ack.HasField("error"):
                error = AckErrorDetail(ack.error.name, ack.error.message)
            return Ack(int(ack.ack_id), ack.success, error)
        if kind == "system_message":
            system = downstream.system_message
            which = system.WhichOneof("message")
            if which == "connected_message":
                connected = system.connected_message
                return Connected(
                    connected.connection_id,
                    connected.user_id or None,
                    connected.reconnection_token or None,
                )
            if which == "disconnected_message":
                return Disconnected(system.disconnected_message.reason)
            return None
        if kind == "pong_message":
            return Pong()
        return None

    def __repr__(self) -> str:
        return f"ProtobufCodec({self.subprotocol})"


class ReliableProtobufCodec(ProtobufCodec):
    """``protobuf.reliable.webpubsub.azure.v1``: adds ``sequence_id`` to data messages.

    The shared encoding is the ``DataMessage`` body; each connection appends its
    ``sequence_id`` field (fields may come in any order) and the outer length prefix.
    """

    subprotocol: str | None = RELIABLE_SUBPROTOCOL
    is_reliable = True

    def encode_message(self, message: Message) -> bytes:
        return self.data_message(message)

    def sequence(self, encoded: bytes, sequence_id: int) -> tuple[bytes, ...]:
        tail = _SEQUENCE_ID_TAG + varint(sequence_id)
        inner_length = len(encoded) + len(tail)
        head = _DATA_MESSAGE_TAG + varint(inner_length)
        return header(OP_BINARY, len(head) + inner_length) + head, encoded, tail


def _data_message(message: DownstreamMessage.DataMessage) -> GroupMessage | ServerMessage | None:
    kind = message.data.WhichOneof("data")
    payload: Any
    if kind == "text_data":
        payload, data_type = message.data.text_data, DataType.TEXT
    elif kind == "binary_data":
        payload, data_type = message.data.binary_data, DataType.BINARY
    elif kind == "protobuf_data":
        payload, data_type = message.data.protobuf_data.SerializeToString(), DataType.PROTOBUF
    elif kind == "json_data":
        try:
            payload = json.loads(message.data.json_data)
        except (ValueError, RecursionError):
            raise ProtocolViolation("'json_data' is not valid JSON.") from None
        data_type = DataType.JSON
    else:
        return None
    # proto3 has no presence for sequence_id: 0 means "not reliable" (ids start at 1).
    sequence_id = int(message.sequence_id) or None
    source = getattr(message, "from")  # `from` is a Python keyword
    if source == Source.GROUP:
        group = message.group if message.HasField("group") else ""
        return GroupMessage(group, payload, data_type, None, sequence_id)
    if source == Source.SERVER:
        return ServerMessage(payload, data_type, sequence_id)
    return None


def _frame(message: DownstreamMessage) -> bytes:
    return binary_frame(message.SerializeToString())


PROTOBUF = ProtobufCodec()
RELIABLE_PROTOBUF = ReliableProtobufCodec()
