"""``protobuf.webpubsub.azure.v1`` and its reliable variant: binary frames (spec 4.8).

Each frame carries one ``UpstreamMessage`` (client to service) or ``DownstreamMessage``
(service to client) of ``proto/webpubsub.proto``. JSON payloads travel as ``json_data``, the
way the official JS and .NET protobuf clients send and expect them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from google.protobuf import any_pb2
from google.protobuf.message import DecodeError

from ..core import jsontext
from ..core.errors import ClientError, InvalidRequest, ProtocolViolation
from ..core.groupstate import StateItem
from ..core.message import DataType, Message, Source
from ..core.metadata import MetadataError, check_pairs
from ..core.requests import (
    CancelInvocation,
    ClientRequest,
    Invoke,
    JoinGroup,
    LeaveGroup,
    Ping,
    SendEvent,
    SendToGroup,
    SequenceAck,
    SetGroupState,
    StreamData,
    StreamEnd,
    StreamInvalid,
    StreamStart,
    SubscribeGroupState,
    Unsupported,
)
from ..core.streams import MAX_STREAM_ID, StreamMark
from ..core.streams import Ack as StreamAck
from ..core.streams import Closed as StreamClosed
from .downstream import (
    Ack,
    AckErrorDetail,
    Connected,
    Disconnected,
    Downstream,
    GroupMessage,
    GroupStateEntry,
    GroupStates,
    InvokeResponse,
    Pong,
    ServerMessage,
    StreamAnswer,
)
from .downstream import StreamInfo as DownstreamStreamInfo
from .frames import OP_BINARY, binary_frame, header
from .proto.webpubsub_pb2 import (
    DownstreamMessage,
    GroupStateItem,
    MessageData,
    StreamInfo,
    UpstreamMessage,
)

SUBPROTOCOL = "protobuf.webpubsub.azure.v1"
RELIABLE_SUBPROTOCOL = "protobuf.reliable.webpubsub.azure.v1"

_DATA_MESSAGE_TAG = b"\x12"  # DownstreamMessage.data_message = 2, length-delimited
_SEQUENCE_ID_TAG = b"\x20"  # DataMessage.sequence_id = 4, varint
# DownstreamMessage.group_state_update_message = 9 / group_state_snapshot_message = 10, and
# their sequence_id = 3 (varint) (spec-next 8)
_GROUP_STATE_TAGS = {"groupStateUpdate": b"\x4a", "groupStateSnapshot": b"\x52"}
_GROUP_STATE_SEQUENCE_TAG = b"\x18"


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


MAX_TTL_SECONDS = 300  # as ttlSeconds of the JSON protocols (spec-next 4)
MAX_INVOCATION_ID = 256
MAX_SEQUENCE_ID = 2**64 - 1


def _metadata(message: Any, ack_id: int | None) -> dict[str, str] | None:
    """The validated ``metadata`` map of a send, event or invocation (spec-next 3.2)."""
    if not message.metadata:
        return None
    try:
        return check_pairs(sorted(message.metadata.items()))
    except MetadataError as exc:
        raise InvalidRequest(f"Invalid metadata: {exc}.", ack_id) from None


def _payload(message: Any, ack_id: int | None, metadata: Any) -> tuple[bytes, DataType]:
    """As :func:`from_message_data`; metadata without data is an empty text (spec-next 3.1)."""
    if metadata is not None and message.data.WhichOneof("data") is None:
        return b"", DataType.TEXT
    return from_message_data(message.data, ack_id)


def _invoke(invoke: Any) -> Invoke:
    """``InvokeEventMessage`` (spec-next 8): as JSON ``invoke``; a bad value answers
    ``BadRequest`` without calling the upstream."""
    invocation_id = invoke.invocation_id
    try:
        if not 0 < len(invocation_id) <= MAX_INVOCATION_ID:
            raise InvalidRequest(
                f"'invocation_id' must be 1 to {MAX_INVOCATION_ID} characters.", None
            )
        if not invoke.event:
            raise InvalidRequest("'event' must be a non-empty string.", None)
        if invoke.HasField("stream"):
            raise InvalidRequest("Streamed invocations are not supported.", None)
        metadata = _metadata(invoke, None)
        if invoke.data.WhichOneof("data") is None:
            return Invoke(invocation_id, invoke.event, b"", None, metadata)
        payload, data_type = from_message_data(invoke.data, None)
        return Invoke(invocation_id, invoke.event, payload, data_type, metadata)
    except InvalidRequest as exc:
        return Invoke(invocation_id, "", error=exc.message)


def _stream_id(value: str) -> str:
    if not value:
        # No id to answer on: the frame cannot be told apart from a broken client.
        raise ProtocolViolation("A stream frame needs a non-empty 'stream_id'.")
    return value


def _stream_start(send: Any) -> StreamStart | StreamInvalid:
    """``SendToGroupMessage`` with ``stream`` (spec-next 2.1, 8)."""
    stream_id = _stream_id(send.stream.stream_id)
    problem = None
    if len(stream_id) > MAX_STREAM_ID:
        problem = f"'stream_id' must be at most {MAX_STREAM_ID} characters."
    elif send.data.WhichOneof("data") is not None:
        problem = "A stream start carries no 'data': send StreamDataMessage."
    elif send.stream.HasField("idle_timeout_ms") and send.stream.idle_timeout_ms == 0:
        problem = "'idle_timeout_ms' must be from 1 to 4294967295."
    if problem is not None:
        return StreamInvalid(stream_id, problem, start=True)
    idle = int(send.stream.idle_timeout_ms) if send.stream.HasField("idle_timeout_ms") else None
    return StreamStart(send.group, stream_id, send.no_echo, idle)


def _stream_data(data: Any) -> StreamData | StreamInvalid:
    """``StreamDataMessage``: a fragment has both ``stream_sequence_id`` and ``data``, a
    keepalive neither (spec-next 8)."""
    stream_id = _stream_id(data.stream_id)
    has_seq = data.HasField("stream_sequence_id")
    has_data = data.data.WhichOneof("data") is not None
    if not has_seq and not has_data:
        return StreamData(stream_id)
    if not (has_seq and has_data):
        return StreamInvalid(stream_id, "A fragment needs 'stream_sequence_id' and 'data'.")
    if data.stream_sequence_id == 0:
        return StreamInvalid(stream_id, "'stream_sequence_id' must be a positive integer.")
    try:
        payload, data_type = from_message_data(data.data, None)
    except InvalidRequest as exc:
        return StreamInvalid(stream_id, exc.message)
    return StreamData(stream_id, int(data.stream_sequence_id), payload, data_type)


def _stream_end(end: Any) -> StreamEnd:
    stream_id = _stream_id(end.stream_id)
    if not end.HasField("error"):
        return StreamEnd(stream_id)
    error = end.error
    code = error.user_error_code[:256] if error.HasField("user_error_code") else None
    return StreamEnd(stream_id, (error.message[:1024], code))


def _stream_info(mark: StreamMark) -> StreamInfo:
    info = StreamInfo(stream_id=mark.stream_id, stream_sequence_id=mark.sequence_id)
    if mark.end:
        info.end_of_stream = True
    if mark.error is not None:
        info.error.name = mark.error.name
        info.error.message = mark.error.message
        if mark.error.user_error_code is not None:
            info.error.user_error_code = mark.error.user_error_code
    return info


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
        if message.metadata:
            data.metadata.update(message.metadata)
        if message.stream is not None:
            data.stream.CopyFrom(_stream_info(message.stream))
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

    def encode_stream_answer(self, answer: StreamAck | StreamClosed) -> bytes:
        """``StreamAckMessage`` / ``StreamNackMessage`` / ``StreamClosedMessage`` (spec-next 8)."""
        if isinstance(answer, StreamClosed):
            closed = DownstreamMessage.StreamClosedMessage(stream_id=answer.stream_id)
            if answer.error is not None:
                closed.error.name = answer.error.name
                closed.error.message = answer.error.message
            return _frame(DownstreamMessage(stream_closed_message=closed))
        if answer.nack is not None:
            nack = DownstreamMessage.StreamNackMessage(
                stream_id=answer.stream_id,
                name=answer.nack.name,
                message=answer.nack.message,
                expected_sequence_id=answer.expected,
            )
            return _frame(DownstreamMessage(stream_nack_message=nack))
        ack = DownstreamMessage.StreamAckMessage(
            stream_id=answer.stream_id, expected_sequence_id=answer.expected
        )
        return _frame(DownstreamMessage(stream_ack_message=ack))

    def group_state_body(self, group: str, items: Iterable[StateItem]) -> bytes:
        """A ``GroupStateSnapshot/UpdateMessage`` without its sequence id (spec-next 8)."""
        message = DownstreamMessage.GroupStateSnapshotMessage(group=group)  # same fields
        for item in items:
            entry = GroupStateItem(connection_id=item.connection_id, updated_at=item.updated_at)
            if item.user_id is not None:
                entry.user_id = item.user_id
            if item.state is not None:
                entry.state.entries.update(item.state)
                entry.state.SetInParent()
            message.items.append(entry)
        return message.SerializeToString()

    def sequence_group_state(
        self, kind: str, encoded: bytes, sequence_id: int
    ) -> tuple[bytes, ...] | None:
        return None  # not sequenced (see ReliableProtobufCodec)

    def encode_group_state(self, kind: str, group: str, items: Iterable[StateItem]) -> bytes:
        inner = self.group_state_body(group, items)
        return binary_frame(_GROUP_STATE_TAGS[kind] + varint(len(inner)) + inner)

    def encode_invoke_response(
        self,
        invocation_id: str,
        *,
        data: bytes | None = None,
        data_type: DataType | None = None,
        error: tuple[str, str] | None = None,
        metadata: Any = None,
    ) -> bytes:
        """``InvokeResponseMessage`` (spec-next 8): ``data`` only on success with a payload."""
        response = DownstreamMessage.InvokeResponseMessage(
            invocation_id=invocation_id, success=error is None
        )
        if error is None and data_type is not None and data is not None:
            response.data.CopyFrom(to_message_data(data, data_type))
        if error is not None:
            response.error.name, response.error.message = error
        if metadata:
            response.metadata.update(metadata)
        return _frame(DownstreamMessage(invoke_response_message=response))

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
            if send.HasField("stream"):
                return _stream_start(send)  # an ack_id on a start is ignored (spec-next 2.1)
            ack_id = _ack_id(send)
            ttl = int(send.ttl_seconds)
            if ttl > MAX_TTL_SECONDS:
                raise InvalidRequest(f"'ttl_seconds' must be from 0 to {MAX_TTL_SECONDS}.", ack_id)
            metadata = _metadata(send, ack_id)
            payload, data_type = _payload(send, ack_id, metadata)
            return SendToGroup(send.group, payload, data_type, ack_id, send.no_echo, metadata, ttl)
        if kind == "event_message":
            event = upstream.event_message
            ack_id = _ack_id(event)
            if not event.event:
                raise InvalidRequest("'event' must be a non-empty string.", ack_id)
            if event.HasField("stream"):
                raise InvalidRequest("Streamed events are not supported.", ack_id)
            metadata = _metadata(event, ack_id)
            payload, data_type = _payload(event, ack_id, metadata)
            return SendEvent(event.event, payload, data_type, ack_id, metadata)
        if kind == "invoke_event_message":
            return _invoke(upstream.invoke_event_message)
        if kind == "cancel_invocation_message":
            return CancelInvocation(upstream.cancel_invocation_message.invocation_id)
        if kind == "stream_data_message":
            return _stream_data(upstream.stream_data_message)
        if kind == "stream_end_message":
            return _stream_end(upstream.stream_end_message)
        if kind == "ping_message":
            return Ping()
        if kind == "sequence_ack_message":
            return SequenceAck(int(upstream.sequence_ack_message.sequence_id))
        if kind == "set_group_state_message":
            set_state = upstream.set_group_state_message
            ack_id = _ack_id(set_state)
            if not set_state.HasField("state"):
                return SetGroupState(set_state.group, None, ack_id)
            try:
                state = check_pairs(sorted(set_state.state.entries.items())) or {}
            except MetadataError as exc:
                raise InvalidRequest(f"Invalid state: {exc}.", ack_id) from None
            return SetGroupState(set_state.group, state, ack_id)
        if kind in ("subscribe_group_state_message", "unsubscribe_group_state_message"):
            watch = getattr(upstream, kind)
            subscribe = kind == "subscribe_group_state_message"
            return SubscribeGroupState(watch.group, _ack_id(watch), subscribe)
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
            "set_group_state_message",
            "subscribe_group_state_message",
            "unsubscribe_group_state_message",
        ):
            return _ack_id(getattr(upstream, kind))
        return None

    def peek_invocation_id(self, data: bytes) -> str | None:
        """The ``invocation_id`` of an ``InvokeEventMessage`` that will not be decoded
        (throttled): it must still get an answer (spec-next 1.6)."""
        try:
            upstream = UpstreamMessage.FromString(data)
        except DecodeError:
            return None
        if upstream.WhichOneof("message") != "invoke_event_message":
            return None
        invocation_id = upstream.invoke_event_message.invocation_id
        return invocation_id if 0 < len(invocation_id) <= MAX_INVOCATION_ID else None

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
            case SendToGroup(group, data, data_type, ack_id, no_echo, metadata, ttl):
                send = upstream.send_to_group_message
                send.group = group
                send.data.CopyFrom(to_message_data(data, data_type))
                send.no_echo = no_echo
                if ack_id is not None:
                    send.ack_id = ack_id
                if metadata:
                    send.metadata.update(metadata)
                if ttl:
                    send.ttl_seconds = ttl
            case SendEvent(event, data, data_type, ack_id, metadata):
                event_message = upstream.event_message
                event_message.event = event
                event_message.data.CopyFrom(to_message_data(data, data_type))
                if ack_id is not None:
                    event_message.ack_id = ack_id
                if metadata:
                    event_message.metadata.update(metadata)
            case Invoke(invocation_id, event, data, data_type, metadata):
                invoke = upstream.invoke_event_message
                invoke.invocation_id = invocation_id
                invoke.event = event
                if data_type is not None:
                    invoke.data.CopyFrom(to_message_data(data, data_type))
                if metadata:
                    invoke.metadata.update(metadata)
            case CancelInvocation(invocation_id):
                upstream.cancel_invocation_message.invocation_id = invocation_id
            case StreamStart(group, stream_id, no_echo, idle_ms):
                start = upstream.send_to_group_message
                start.group = group
                start.no_echo = no_echo
                start.stream.stream_id = stream_id
                if idle_ms is not None:
                    start.stream.idle_timeout_ms = idle_ms
            case StreamData(stream_id, sequence_id, data, data_type):
                fragment = upstream.stream_data_message
                fragment.stream_id = stream_id
                if sequence_id is not None:
                    fragment.stream_sequence_id = sequence_id
                    fragment.data.CopyFrom(to_message_data(data, DataType(data_type)))
            case StreamEnd(stream_id, error):
                end = upstream.stream_end_message
                end.stream_id = stream_id
                if error is not None:
                    end.error.message = error[0]
                    if error[1] is not None:
                        end.error.user_error_code = error[1]
            case SetGroupState(group, state, ack_id):
                set_state = upstream.set_group_state_message
                set_state.group = group
                if ack_id is not None:
                    set_state.ack_id = ack_id
                if state is not None:
                    set_state.state.SetInParent()
                    set_state.state.entries.update(state)
            case SubscribeGroupState(group, ack_id, subscribe):
                watch = (
                    upstream.subscribe_group_state_message
                    if subscribe
                    else upstream.unsubscribe_group_state_message
                )
                watch.group = group
                if ack_id is not None:
                    watch.ack_id = ack_id
            case SequenceAck(sequence_id):
                upstream.sequence_ack_message.sequence_id = sequence_id
            case Ping():
                upstream.ping_message.SetInParent()
            case _:
                raise TypeError(f"clients cannot send {request!r}")
        return upstream.SerializeToString()

    def decode_downstream(self, data: bytes | str) -> Downstream | None:
        """Decode one service-to-client ``DownstreamMessage`` (spec 4.8).

        Returns None for messages this client does not know (group state, a data
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
        if kind == "invoke_response_message":
            return _invoke_response(downstream.invoke_response_message)
        if kind in ("group_state_snapshot_message", "group_state_update_message"):
            return _group_states(getattr(downstream, kind), kind.endswith("snapshot_message"))
        if kind == "stream_ack_message":
            ack_ = downstream.stream_ack_message
            return StreamAnswer(ack_.stream_id, False, int(ack_.expected_sequence_id))
        if kind == "stream_nack_message":
            nack = downstream.stream_nack_message
            detail = AckErrorDetail(nack.name, nack.message)
            return StreamAnswer(nack.stream_id, False, int(nack.expected_sequence_id), detail)
        if kind == "stream_closed_message":
            closed = downstream.stream_closed_message
            error = None
            if closed.HasField("error"):
                error = AckErrorDetail(closed.error.name, closed.error.message)
            return StreamAnswer(closed.stream_id, True, error=error)
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

    def encode_group_state(self, kind: str, group: str, items: Iterable[StateItem]) -> bytes:
        return self.group_state_body(group, items)

    def sequence_group_state(
        self, kind: str, encoded: bytes, sequence_id: int
    ) -> tuple[bytes, ...]:
        """As :meth:`sequence`, for a group-state frame: its own ``sequence_id`` (field 3)."""
        tail = _GROUP_STATE_SEQUENCE_TAG + varint(sequence_id)
        inner_length = len(encoded) + len(tail)
        head = _GROUP_STATE_TAGS[kind] + varint(inner_length)
        return header(OP_BINARY, len(head) + inner_length) + head, encoded, tail

    def sequence(self, encoded: bytes, sequence_id: int) -> tuple[bytes, ...]:
        tail = _SEQUENCE_ID_TAG + varint(sequence_id)
        inner_length = len(encoded) + len(tail)
        head = _DATA_MESSAGE_TAG + varint(inner_length)
        return header(OP_BINARY, len(head) + inner_length) + head, encoded, tail


def _payload_of(data: MessageData) -> tuple[Any, DataType] | None:
    kind = data.WhichOneof("data")
    if kind == "text_data":
        return data.text_data, DataType.TEXT
    if kind == "binary_data":
        return data.binary_data, DataType.BINARY
    if kind == "protobuf_data":
        return data.protobuf_data.SerializeToString(), DataType.PROTOBUF
    if kind == "json_data":
        try:
            return json.loads(data.json_data), DataType.JSON
        except (ValueError, RecursionError):
            raise ProtocolViolation("'json_data' is not valid JSON.") from None
    return None


def _group_states(message: Any, snapshot: bool) -> GroupStates:
    items = tuple(
        GroupStateEntry(
            item.connection_id,
            item.user_id if item.HasField("user_id") else None,
            dict(item.state.entries) if item.HasField("state") else None,
            int(item.updated_at),
        )
        for item in message.items
    )
    sequence_id = int(message.sequence_id) if message.HasField("sequence_id") else None
    return GroupStates(message.group, items, snapshot, sequence_id)


def _invoke_response(response: Any) -> InvokeResponse:
    metadata = dict(response.metadata) or None
    if not response.success:
        error = AckErrorDetail(response.error.name, response.error.message)
        return InvokeResponse(response.invocation_id, False, error=error, metadata=metadata)
    payload = _payload_of(response.data) if response.HasField("data") else None
    if payload is None:
        return InvokeResponse(response.invocation_id, True, metadata=metadata)
    return InvokeResponse(response.invocation_id, True, *payload, metadata=metadata)


def _downstream_stream(message: DownstreamMessage.DataMessage) -> DownstreamStreamInfo | None:
    if not message.HasField("stream"):
        return None
    info = message.stream
    error = None
    if info.HasField("error"):
        error = (info.error.name, info.error.message, info.error.user_error_code or None)
    return DownstreamStreamInfo(
        info.stream_id, int(info.stream_sequence_id), info.end_of_stream, error
    )


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
        metadata = dict(message.metadata) or None
        stream = _downstream_stream(message)
        return GroupMessage(group, payload, data_type, None, sequence_id, metadata, stream)
    if source == Source.SERVER:
        return ServerMessage(payload, data_type, sequence_id, dict(message.metadata) or None)
    return None


def _frame(message: DownstreamMessage) -> bytes:
    return binary_frame(message.SerializeToString())


PROTOBUF = ProtobufCodec()
RELIABLE_PROTOBUF = ReliableProtobufCodec()
