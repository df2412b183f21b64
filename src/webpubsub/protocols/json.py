"""``json.webpubsub.azure.v1``: JSON envelopes in text frames (spec 4.3, 4.4).

Decoding turns one frame into a :mod:`~webpubsub.core.requests` value; encoding builds the
downstream envelopes. A client's JSON payload is validated (:mod:`.jsontext`) and kept as the
exact text of its ``data`` member, so receivers get it byte for byte; a data message embeds
that text without re-parsing it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Any, TypeGuard

from ..core import jsontext
from ..core.errors import ClientError, InvalidRequest, ProtocolViolation
from ..core.groupstate import StateItem
from ..core.jsontext import Refused, lenient_members, members
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
from ..core.streams import MAX_IDLE_MS, MAX_STREAM_ID, StreamError, StreamMark
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
    Payload,
    Pong,
    ServerMessage,
    StreamAnswer,
    StreamInfo,
)
from .frames import OP_TEXT, header, text_frame

SUBPROTOCOL = "json.webpubsub.azure.v1"
RELIABLE_SUBPROTOCOL = "json.reliable.webpubsub.azure.v1"
UINT64_MAX = 2**64 - 1

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def dumps(value: Any) -> bytes:
    return _dumps(value).encode()


def encode_data(data: bytes, data_type: DataType) -> bytes:
    """The JSON text of a ``data`` field for a payload of ``data_type`` (spec 4.4)."""
    if data_type is DataType.JSON:
        return data
    if data_type is DataType.TEXT:
        return dumps(data.decode("utf-8", "replace"))
    return b'"' + base64.b64encode(data) + b'"'


def parse_data_type(raw: Any) -> DataType | None:
    """The data type a ``dataType`` field names, or None for anything else."""
    return _DATA_TYPES.get(raw) if isinstance(raw, str) else None


_DATA_TYPES = {data_type.value: data_type for data_type in DataType}  # faster than DataType()


def decode_data(
    envelope: dict[str, Any], raw: bytes | None, ack_id: int | None
) -> tuple[bytes, DataType]:
    """Payload bytes and data type from a request's ``dataType``/``data`` (default json).

    ``raw`` is the exact text of the ``data`` member (None when there is none): json data is
    relayed as sent, never re-serialized.
    """
    raw_type = envelope.get("dataType", "json")
    data_type = parse_data_type(raw_type)
    if data_type is None:
        raise InvalidRequest(f"Unsupported dataType {str(raw_type)[:40]!r}.", ack_id)
    if data_type is DataType.JSON:
        return (b"null" if raw is None else raw), data_type
    data = envelope.get("data")
    if not isinstance(data, str):
        raise InvalidRequest(f"'data' must be a string for dataType '{data_type}'.", ack_id)
    if data_type is DataType.TEXT:
        try:
            return data.encode("utf-8"), data_type
        except UnicodeEncodeError:
            # A lone surrogate escape: invalid UTF-8 for every receiver (they close, 1007).
            raise InvalidRequest(
                "'data' is not valid Unicode (a lone surrogate).", ack_id
            ) from None
    try:
        return base64.b64decode(data, validate=True), data_type
    except (binascii.Error, ValueError):
        raise InvalidRequest(
            f"'data' is not valid base64 for dataType '{data_type}'.", ack_id
        ) from None


def parse_envelope(data: bytes) -> tuple[dict[str, Any], bytes | None]:
    """The members of a client frame and the exact bytes of its json ``data`` member.

    A frame whose data is json is walked member by member, to keep the raw text of
    ``data``; any other is parsed at once (faster), and walked again only if it turns out
    to carry json data after all (the ``"dataType":"json"`` hint missed it).

    Raises:
        ProtocolViolation: the frame is not one JSON object.
        InvalidRequest: it is JSON that not every client can read (NaN, infinity, a lone
            surrogate, nesting past :data:`~.jsontext.MAX_DEPTH`); answered when its ackId
            can be read.
    """
    try:
        text = data.decode("utf-8")
        span = None
        if '"dataType":"json"' in text or '"dataType"' not in text:
            envelope, span = members(text, "data")
        else:
            envelope = jsontext.value(text, jsontext.MAX_DEPTH + 1)  # members: MAX_DEPTH
            if isinstance(envelope, dict) and _carries_json(envelope):
                envelope, span = members(text, "data")
    except Refused as exc:
        raise InvalidRequest(f"The message is not valid JSON: {exc}", _peek_ack_id(text)) from None
    except ValueError:  # UnicodeDecodeError included: a binary frame that is not UTF-8
        raise ProtocolViolation("The message is not valid JSON.") from None
    if not isinstance(envelope, dict):
        raise ProtocolViolation("The message must be a JSON object with a string 'type'.")
    if span is None:
        return envelope, None
    start, end = span
    # Same offsets in bytes as in characters when the text is ASCII (a flag, not a scan).
    raw = data[start:end] if text.isascii() else text[start:end].encode("utf-8")
    return envelope, raw


def _carries_json(envelope: dict[str, Any]) -> bool:
    return "data" in envelope and envelope.get("dataType", "json") == "json"


def _peek_ack_id(text: str, *, past_data: bool = True) -> int | None:
    """The ackId of a frame that will not be decoded in full (refused or throttled), if it
    can be read; the official clients send it before ``data``."""
    for key, value in lenient_members(text, past_data=past_data):
        if key == "ackId":
            return value if _is_uint64(value) else None
    return None


PEEK_BYTES = 4096
"""How much of a throttled frame is read to find its ackId: the head (room for a group name
of the longest allowed), never the payload."""


class JsonCodec:
    """Encoder/decoder of the JSON subprotocol (non-reliable)."""

    subprotocol: str | None = SUBPROTOCOL
    is_pubsub = True
    is_reliable = False

    # -- downstream -------------------------------------------------------------------------

    def message_body(self, message: Message) -> bytes:
        """The JSON text of a ``message`` envelope."""
        if message.source is Source.GROUP:
            head = b'{"type":"message","from":"group","group":' + dumps(message.group)
            if message.from_user_id is not None:
                head += b',"fromUserId":' + dumps(message.from_user_id)
        else:
            head = b'{"type":"message","from":"server"'
        body = (
            head
            + b',"dataType":"'
            + message.data_type.value.encode()
            + b'","data":'
            + encode_data(message.data, message.data_type)
        )
        if message.metadata:
            body += b',"metadata":' + dumps(message.metadata)
        if message.stream is not None:
            body += b',"stream":' + dumps(_stream_descriptor(message.stream))
        return body + b"}"

    def encode_message(self, message: Message) -> bytes:
        return text_frame(self.message_body(message))

    def encode_ack(self, ack_id: int, error: ClientError | None) -> bytes | None:
        ack: dict[str, Any] = {"type": "ack", "ackId": ack_id, "success": error is None}
        if error is not None:
            ack["error"] = {"name": error.name, "message": error.message}
        return text_frame(dumps(ack))

    def encode_connected(
        self, connection_id: str, user_id: str | None, reconnection_token: str | None
    ) -> bytes | None:
        body: dict[str, Any] = {
            "type": "system",
            "event": "connected",
            "userId": user_id,
            "connectionId": connection_id,
        }
        if reconnection_token is not None:
            body["reconnectionToken"] = reconnection_token
        return text_frame(dumps(body))

    def encode_disconnected(self, reason: str) -> bytes | None:
        return text_frame(dumps({"type": "system", "event": "disconnected", "message": reason}))

    def encode_pong(self) -> bytes | None:
        return text_frame(b'{"type":"pong"}')

    def encode_stream_answer(self, answer: StreamAck | StreamClosed) -> bytes:
        return encode_stream_answer(answer)

    def group_state_body(self, kind: str, group: str, items: Iterable[StateItem]) -> bytes:
        """A ``groupStateSnapshot`` / ``groupStateUpdate`` envelope (spec-next 5)."""
        listed = []
        for item in items:
            entry: dict[str, Any] = {"connectionId": item.connection_id}
            if item.user_id is not None:
                entry["userId"] = item.user_id
            if item.state is not None:
                entry["state"] = dict(item.state)
            entry["updatedAt"] = item.updated_at
            listed.append(entry)
        return dumps({"type": kind, "group": group, "items": listed})

    def encode_group_state(self, kind: str, group: str, items: Iterable[StateItem]) -> bytes:
        """As :meth:`encode_message`: a frame here, the shared body on the reliable codec
        (group-state frames are sequenced and replayed like data)."""
        return text_frame(self.group_state_body(kind, group, items))

    def sequence_group_state(
        self, kind: str, encoded: bytes, sequence_id: int
    ) -> tuple[bytes, ...] | None:
        return None  # a group-state frame takes its sequenceId as a message does

    def encode_invoke_response(
        self,
        invocation_id: str,
        *,
        data: bytes | None = None,
        data_type: DataType | None = None,
        error: tuple[str, str] | None = None,
        metadata: Any = None,
    ) -> bytes:
        return encode_invoke_response(
            invocation_id, data=data, data_type=data_type, error=error, metadata=metadata
        )

    # -- upstream ---------------------------------------------------------------------------

    def sequence(self, encoded: bytes, sequence_id: int) -> tuple[bytes, ...]:
        raise NotImplementedError("json.webpubsub.azure.v1 has no sequence ids")

    def decode(self, data: bytes, is_text: bool) -> ClientRequest:
        envelope, raw = parse_envelope(data)
        if not isinstance(envelope.get("type"), str):
            raise ProtocolViolation("The message must be a JSON object with a string 'type'.")
        kind: str = envelope["type"]
        ack_id = self._ack_id(envelope)
        if kind == "joinGroup":
            return JoinGroup(self._group(envelope, ack_id), ack_id)
        if kind == "leaveGroup":
            return LeaveGroup(self._group(envelope, ack_id), ack_id)
        if kind == "sendToGroup":
            if "stream" in envelope:
                return _stream_start(envelope)
            group = self._group(envelope, ack_id)
            no_echo = envelope.get("noEcho", False)
            if not isinstance(no_echo, bool):
                raise InvalidRequest("'noEcho' must be a boolean.", ack_id)
            ttl = envelope.get("ttlSeconds")
            if ttl is None:
                ttl = 0
            elif type(ttl) is not int or not 0 <= ttl <= MAX_TTL_SECONDS:
                raise InvalidRequest(
                    f"'ttlSeconds' must be an integer from 0 to {MAX_TTL_SECONDS}.", ack_id
                )
            metadata = _metadata(envelope, data, ack_id)
            payload, data_type = _payload(envelope, raw, ack_id, metadata)
            return SendToGroup(group, payload, data_type, ack_id, no_echo, metadata, ttl)
        if kind == "event":
            event = envelope.get("event")
            if not isinstance(event, str) or not event:
                raise InvalidRequest("'event' must be a non-empty string.", ack_id)
            metadata = _metadata(envelope, data, ack_id)
            payload, data_type = _payload(envelope, raw, ack_id, metadata)
            return SendEvent(event, payload, data_type, ack_id, metadata)
        if kind == "invoke":
            return _invoke(envelope, raw, data)
        if kind == "cancelInvocation":
            invocation_id = envelope.get("invocationId")
            if not isinstance(invocation_id, str):
                raise ProtocolViolation("'invocationId' must be a string.")
            return CancelInvocation(invocation_id)
        if kind == "streamData":
            return _stream_data(envelope, raw)
        if kind == "streamEnd":
            return _stream_end(envelope)
        if kind == "setGroupState":
            group = self._group(envelope, ack_id)
            return SetGroupState(group, _group_state(envelope.get("state"), ack_id), ack_id)
        if kind in ("subscribeGroupState", "unsubscribeGroupState"):
            group = self._group(envelope, ack_id)
            return SubscribeGroupState(group, ack_id, kind == "subscribeGroupState")
        if kind == "ping":
            return Ping()
        if kind == "sequenceAck":
            sequence_id = envelope.get("sequenceId")
            if not _is_uint64(sequence_id):
                raise ProtocolViolation("'sequenceId' must be an unsigned integer.")
            return SequenceAck(sequence_id)
        return Unsupported(kind[:64], ack_id)

    def peek_invocation_id(self, data: bytes) -> str | None:
        """The ``invocationId`` of an ``invoke`` that will not be decoded (throttled), read
        from its head: it must still get an ``invokeResponse``, or the JS client waits
        forever (spec-next 1.6)."""
        head = data[:PEEK_BYTES].decode("utf-8", "ignore")
        kind = invocation_id = None
        for key, value in lenient_members(head, past_data=False):
            if key == "type":
                kind = value
            elif key == "invocationId":
                invocation_id = value
        if kind != "invoke" or not isinstance(invocation_id, str):
            return None
        return invocation_id if 0 < len(invocation_id) <= MAX_INVOCATION_ID else None

    def peek_ack_id(self, data: bytes, is_text: bool) -> int | None:
        """The ackId of a frame that will not be decoded (throttled), read from its head only:
        a refused frame costs next to nothing, however large."""
        head = data[:PEEK_BYTES].decode("utf-8", "ignore")
        return _peek_ack_id(head, past_data=False)

    # -- client side: requests out, service messages in -----------------------------------

    text_frames = True
    """Frames of this subprotocol are text frames (clients send with opcode 1)."""

    def encode_request(self, request: ClientRequest) -> bytes:
        """The text-frame payload a client sends for ``request`` (spec 4.3).

        The frames are those the official SDKs produce; ``ackId`` is left out when None.
        Payload bytes are :class:`~webpubsub.core.message.Message` bytes: JSON text goes in
        as is, text as a JSON string, binary and protobuf as padded base64.

        Raises:
            TypeError: for a request clients cannot send (``Unsupported``).
        """
        match request:
            case JoinGroup(group, ack_id) | LeaveGroup(group, ack_id):
                kind = b"joinGroup" if isinstance(request, JoinGroup) else b"leaveGroup"
                return b'{"type":"' + kind + b'","group":' + dumps(group) + _ack(ack_id) + b"}"
            case SendToGroup(group, data, data_type, ack_id, no_echo, metadata, ttl):
                return (
                    b'{"type":"sendToGroup","group":'
                    + dumps(group)
                    + _ack(ack_id)
                    + _data(data, data_type)
                    + (b',"noEcho":true' if no_echo else b',"noEcho":false')
                    + (b',"ttlSeconds":%d' % ttl if ttl else b"")
                    + _metadata_member(metadata)
                    + b"}"
                )
            case SendEvent(event, data, data_type, ack_id, metadata):
                return (
                    b'{"type":"event","event":'
                    + dumps(event)
                    + _ack(ack_id)
                    + _data(data, data_type)
                    + _metadata_member(metadata)
                    + b"}"
                )
            case Invoke(invocation_id, event, data, data_type, metadata):
                payload = _data(data, data_type) if data_type is not None else b""
                return (
                    b'{"type":"invoke","invocationId":'
                    + dumps(invocation_id)
                    + b',"target":"event","event":'
                    + dumps(event)
                    + payload
                    + _metadata_member(metadata)
                    + b"}"
                )
            case SetGroupState(group, state, ack_id):
                body: dict[str, Any] = {"type": "setGroupState", "group": group}
                if state is not None:
                    body["state"] = dict(state)
                if ack_id is not None:
                    body["ackId"] = ack_id
                return dumps(body)
            case SubscribeGroupState(group, ack_id, subscribe):
                kind = b"subscribeGroupState" if subscribe else b"unsubscribeGroupState"
                return b'{"type":"' + kind + b'","group":' + dumps(group) + _ack(ack_id) + b"}"
            case StreamStart(group, stream_id, no_echo, idle_ms):
                stream: dict[str, Any] = {"streamId": stream_id}
                if idle_ms is not None:
                    stream["idleTimeoutMs"] = idle_ms
                return dumps(
                    {"type": "sendToGroup", "group": group, "noEcho": no_echo, "stream": stream}
                )
            case StreamData(stream_id, sequence_id, data, data_type):
                head = b'{"type":"streamData","streamId":' + dumps(stream_id)
                if sequence_id is None:
                    return head + b"}"
                return (
                    head + b',"streamSequenceId":%d' % sequence_id + _data(data, data_type) + b"}"
                )
            case StreamEnd(stream_id, error):
                end: dict[str, Any] = {"type": "streamEnd", "streamId": stream_id}
                if error is not None:
                    end["error"] = {"message": error[0]}
                    if error[1] is not None:
                        end["error"]["userErrorCode"] = error[1]
                return dumps(end)
            case CancelInvocation(invocation_id):
                return b'{"type":"cancelInvocation","invocationId":' + dumps(invocation_id) + b"}"
            case SequenceAck(sequence_id):
                return b'{"type":"sequenceAck","sequenceId":%d}' % sequence_id
            case Ping():
                return b'{"type":"ping"}'
        raise TypeError(f"clients cannot send {request!r}")

    def decode_downstream(self, data: bytes | str) -> Downstream | None:
        """Decode one service-to-client frame (spec 4.4).

        Returns None for messages this client does not know (a newer service's
        ``type``, ``from`` or ``dataType``), which clients skip to stay forward compatible.

        Raises:
            ProtocolViolation: the frame is not a valid message of the subprotocol.
        """
        try:
            envelope = json.loads(data)
        except (ValueError, RecursionError):
            raise ProtocolViolation("The message is not valid JSON.") from None
        if not isinstance(envelope, dict):
            raise ProtocolViolation("The message must be a JSON object.")
        kind = envelope.get("type")
        if kind == "message":
            return _data_message(envelope)
        if kind == "ack":
            ack_id: Any = envelope.get("ackId")
            success = envelope.get("success")
            if not _is_uint64(ack_id) or not isinstance(success, bool):
                raise ProtocolViolation("An ack needs an unsigned 'ackId' and a boolean 'success'.")
            error = envelope.get("error")
            if not isinstance(error, dict):
                return Ack(ack_id, success)
            return Ack(ack_id, success, AckErrorDetail(_str(error, "name"), _str(error, "message")))
        if kind == "system":
            event = envelope.get("event")
            if event == "connected":
                connection_id = envelope.get("connectionId")
                if not isinstance(connection_id, str) or not connection_id:
                    raise ProtocolViolation("'connected' needs a 'connectionId'.")
                return Connected(
                    connection_id,
                    _str_or_none(envelope, "userId"),
                    _str_or_none(envelope, "reconnectionToken"),
                )
            if event == "disconnected":
                return Disconnected(_str(envelope, "message"))
            return None
        if kind == "pong":
            return Pong()
        if kind == "invokeResponse":
            return _invoke_response(envelope)
        if kind in ("groupStateSnapshot", "groupStateUpdate"):
            return _group_states(envelope, kind == "groupStateSnapshot")
        if kind in ("streamAck", "streamNack", "streamClosed"):
            return _stream_answer(kind, envelope)
        return None

    @staticmethod
    def _ack_id(envelope: dict[str, Any]) -> int | None:
        if "ackId" not in envelope or envelope["ackId"] is None:
            return None
        ack_id = envelope["ackId"]
        if not _is_uint64(ack_id):
            raise ProtocolViolation("'ackId' must be an unsigned 64-bit integer.")
        return int(ack_id)

    @staticmethod
    def _group(envelope: dict[str, Any], ack_id: int | None) -> str:
        group = envelope.get("group")
        if not isinstance(group, str):
            raise InvalidRequest("'group' must be a string.", ack_id)
        return group

    def __repr__(self) -> str:
        return f"JsonCodec({self.subprotocol})"


class ReliableJsonCodec(JsonCodec):
    """``json.reliable.webpubsub.azure.v1``: as the JSON protocol, plus ``sequenceId``.

    The shared encoding of a message is its envelope without the opening brace; each
    connection adds ``{"sequenceId":N,`` and a frame header, a few bytes (spec 4.7).
    """

    subprotocol: str | None = RELIABLE_SUBPROTOCOL
    is_reliable = True

    def encode_message(self, message: Message) -> bytes:
        return self.message_body(message)[1:]

    def encode_group_state(self, kind: str, group: str, items: Iterable[StateItem]) -> bytes:
        return self.group_state_body(kind, group, items)[1:]

    def sequence(self, encoded: bytes, sequence_id: int) -> tuple[bytes, ...]:
        prefix = b'{"sequenceId":%d,' % sequence_id
        return header(OP_TEXT, len(prefix) + len(encoded)) + prefix, encoded


MAX_TTL_SECONDS = 300
MAX_INVOCATION_ID = 256
MAX_JSON_INTEGER = 2**53 - 1


# -- group streams (spec-next 2) ---------------------------------------------------------


def _stream_id(envelope: dict[str, Any], holder: Any) -> str:
    stream_id = holder.get("streamId") if isinstance(holder, dict) else None
    if not isinstance(stream_id, str) or not stream_id:
        # No id to answer on: the frame cannot be told apart from a broken client.
        raise ProtocolViolation("A stream frame needs a non-empty string 'streamId'.")
    return stream_id


def _stream_start(envelope: dict[str, Any]) -> StreamStart | StreamInvalid:
    stream = envelope["stream"]
    stream_id = _stream_id(envelope, stream)

    def invalid(problem: str) -> StreamInvalid:
        return StreamInvalid(stream_id, problem, start=True)

    if len(stream_id) > MAX_STREAM_ID:
        return invalid(f"'streamId' must be at most {MAX_STREAM_ID} characters.")
    group = envelope.get("group")
    if not isinstance(group, str):
        return invalid("'group' must be a string.")
    if "data" in envelope or "dataType" in envelope:
        return invalid("A stream start carries no 'data' or 'dataType': send streamData.")
    no_echo = envelope.get("noEcho", False)
    if not isinstance(no_echo, bool):
        return invalid("'noEcho' must be a boolean.")
    idle = stream.get("idleTimeoutMs")
    if idle is not None and (type(idle) is not int or not 0 < idle <= MAX_IDLE_MS):
        return invalid(f"'idleTimeoutMs' must be an integer from 1 to {MAX_IDLE_MS}.")
    return StreamStart(group, stream_id, no_echo, idle)


def _stream_data(envelope: dict[str, Any], raw: bytes | None) -> StreamData | StreamInvalid:
    stream_id = _stream_id(envelope, envelope)
    present = [name in envelope for name in ("streamSequenceId", "dataType", "data")]
    if not any(present):
        return StreamData(stream_id)  # a keepalive
    if not all(present):
        return StreamInvalid(
            stream_id, "A fragment needs 'streamSequenceId', 'dataType' and 'data' together."
        )
    sequence_id = envelope["streamSequenceId"]
    if type(sequence_id) is not int or not 0 < sequence_id <= MAX_JSON_INTEGER:
        return StreamInvalid(stream_id, "'streamSequenceId' must be a positive integer.")
    try:
        data, data_type = decode_data(envelope, raw, None)
    except InvalidRequest as exc:
        return StreamInvalid(stream_id, exc.message)
    return StreamData(stream_id, sequence_id, data, data_type)


def _stream_end(envelope: dict[str, Any]) -> StreamEnd | StreamInvalid:
    stream_id = _stream_id(envelope, envelope)
    error = envelope.get("error")
    if error is None:
        return StreamEnd(stream_id)
    if not isinstance(error, dict):
        return StreamInvalid(stream_id, "'error' must be an object.")
    message = error.get("message", "")
    code = error.get("userErrorCode")
    if not isinstance(message, str) or not (code is None or isinstance(code, str)):
        return StreamInvalid(stream_id, "'error.message' and 'error.userErrorCode' are strings.")
    return StreamEnd(stream_id, (message[:1024], code[:256] if code is not None else None))


def _stream_descriptor(mark: StreamMark) -> dict[str, Any]:
    out: dict[str, Any] = {"streamId": mark.stream_id, "streamSequenceId": mark.sequence_id}
    if mark.end:
        out["endOfStream"] = True
    if mark.error is not None:
        out["error"] = _stream_error(mark.error)
    return out


def _stream_error(error: StreamError) -> dict[str, Any]:
    out: dict[str, Any] = {"name": error.name, "message": error.message}
    if error.user_error_code is not None:
        out["userErrorCode"] = error.user_error_code
    return out


def encode_stream_answer(answer: StreamAck | StreamClosed) -> bytes:
    """``streamAck``, ``streamNack`` or ``streamClosed`` for the publisher (spec-next 2.2)."""
    if isinstance(answer, StreamClosed):
        body: dict[str, Any] = {"type": "streamClosed", "streamId": answer.stream_id}
        if answer.error is not None:
            body["error"] = {"name": answer.error.name, "message": answer.error.message}
    elif answer.nack is not None:
        body = {
            "type": "streamNack",
            "streamId": answer.stream_id,
            "expectedSequenceId": answer.expected,
            "name": answer.nack.name,
            "message": answer.nack.message,
        }
    else:
        body = {
            "type": "streamAck",
            "streamId": answer.stream_id,
            "expectedSequenceId": answer.expected,
        }
    return text_frame(dumps(body))


def _group_state(value: Any, ack_id: int | None) -> dict[str, str] | None:
    """The ``state`` of a ``setGroupState``: absent or null clears; a string map limited as
    metadata (spec-next 5, 3.2)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest("'state' must be an object of strings.", ack_id)
    try:
        return check_pairs(value.items()) or {}
    except MetadataError as exc:
        raise InvalidRequest(f"Invalid state: {exc}.", ack_id) from None


def _invoke(envelope: dict[str, Any], raw: bytes | None, frame: bytes) -> Invoke:
    """An ``invoke`` frame (spec-next 1.1). No string ``invocationId``: malformed (the
    client is declined); any other bad value: an ``Invoke`` carrying the error."""
    invocation_id = envelope.get("invocationId")
    if not isinstance(invocation_id, str):
        raise ProtocolViolation("'invocationId' must be a string.")
    try:
        if not 0 < len(invocation_id) <= MAX_INVOCATION_ID:
            raise InvalidRequest(
                f"'invocationId' must be 1 to {MAX_INVOCATION_ID} characters.", None
            )
        target = envelope.get("target")
        if target is not None and target != "event":
            raise InvalidRequest(f"Unsupported invocation target {str(target)[:40]!r}.", None)
        event = envelope.get("event")
        if not isinstance(event, str) or not event:
            raise InvalidRequest("'event' must be a non-empty string.", None)
        metadata = _metadata(envelope, frame, None)
        if "dataType" not in envelope and "data" not in envelope:
            return Invoke(invocation_id, event, b"", None, metadata)
        payload, data_type = decode_data(envelope, raw, None)
        return Invoke(invocation_id, event, payload, data_type, metadata)
    except InvalidRequest as exc:
        return Invoke(invocation_id, "", error=exc.message)


def encode_invoke_response(
    invocation_id: str,
    *,
    data: bytes | None = None,
    data_type: DataType | None = None,
    error: tuple[str, str] | None = None,
    metadata: Any = None,
) -> bytes:
    """An ``invokeResponse`` text frame (spec-next 1.1): ``success`` always present,
    ``dataType``/``data`` only with a payload, ``error`` {name, message} on failure."""
    body = (
        b'{"type":"invokeResponse","invocationId":'
        + dumps(invocation_id)
        + (b',"success":false' if error is not None else b',"success":true')
    )
    if error is None and data_type is not None and data is not None:
        body += _data(data, data_type)
    if error is not None:
        body += b',"error":' + dumps({"name": error[0], "message": error[1]})
    return text_frame(body + _metadata_member(metadata) + b"}")


def _metadata(envelope: dict[str, Any], frame: bytes, ack_id: int | None) -> dict[str, str] | None:
    """The validated ``metadata`` of a ``sendToGroup``/``event`` (spec-next 3.1, 3.2);
    absent or null: None. The frame is parsed again, only when it carries metadata, to see
    repeated keys (which a dict would hide)."""
    value = envelope.get("metadata")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidRequest("'metadata' must be an object of strings.", ack_id)
    try:
        pairs: Any = json.loads(frame, object_pairs_hook=lambda p: p)
        members_ = [v for k, v in pairs if k == "metadata"]
        return check_pairs(members_[-1])
    except MetadataError as exc:
        raise InvalidRequest(f"Invalid metadata: {exc}.", ack_id) from None
    except (ValueError, RecursionError, TypeError):
        raise InvalidRequest("'metadata' must be an object of strings.", ack_id) from None


def _payload(
    envelope: dict[str, Any], raw: bytes | None, ack_id: int | None, metadata: Any
) -> tuple[bytes, DataType]:
    """As :func:`decode_data`; a message with metadata and no ``data`` is empty text."""
    if metadata is not None and "data" not in envelope:
        return b"", DataType.TEXT
    return decode_data(envelope, raw, ack_id)


def _metadata_member(metadata: Any) -> bytes:
    return b',"metadata":' + dumps(dict(metadata)) if metadata else b""


def _is_uint64(value: Any) -> TypeGuard[int]:
    return type(value) is int and 0 <= value <= UINT64_MAX


def _ack(ack_id: int | None) -> bytes:
    return b"" if ack_id is None else b',"ackId":%d' % ack_id


def _data(data: bytes, data_type: DataType) -> bytes:
    return b',"dataType":"' + data_type.value.encode() + b'","data":' + encode_data(data, data_type)


def _str(envelope: dict[str, Any], key: str) -> str:
    value = envelope.get(key)
    return value if isinstance(value, str) else ""


def _str_or_none(envelope: dict[str, Any], key: str) -> str | None:
    value = envelope.get(key)
    return value if isinstance(value, str) else None


def _invoke_response(envelope: dict[str, Any]) -> InvokeResponse | None:
    """An ``invokeResponse`` (spec-next 1.1); None when it cannot settle a call (as the JS
    client: no ``success``, or a ``dataType`` it does not know)."""
    invocation_id = envelope.get("invocationId")
    success = envelope.get("success")
    if not isinstance(invocation_id, str) or not isinstance(success, bool):
        return None
    metadata = _str_metadata(envelope)
    if not success:
        error = envelope.get("error")
        detail = (
            AckErrorDetail(_str(error, "name"), _str(error, "message"))
            if isinstance(error, dict)
            else AckErrorDetail("", "")
        )
        return InvokeResponse(invocation_id, False, error=detail, metadata=metadata)
    if "dataType" not in envelope:
        return InvokeResponse(invocation_id, True, metadata=metadata)
    payload = _payload_of(envelope)
    if payload is None:
        return None
    data, data_type = payload
    return InvokeResponse(invocation_id, True, data, data_type, metadata=metadata)


def _group_states(envelope: dict[str, Any], snapshot: bool) -> GroupStates | None:
    group, raw_items = envelope.get("group"), envelope.get("items")
    if not isinstance(group, str) or not isinstance(raw_items, list):
        return None
    items = []
    for raw in raw_items:
        if not isinstance(raw, dict) or not isinstance(raw.get("connectionId"), str):
            continue
        state = raw.get("state")
        state = (
            {k: v for k, v in state.items() if isinstance(v, str)}
            if isinstance(state, dict)
            else None
        )
        updated_at = raw.get("updatedAt")
        items.append(
            GroupStateEntry(
                raw["connectionId"],
                _str_or_none(raw, "userId"),
                state,
                updated_at if type(updated_at) is int else 0,
            )
        )
    sequence_id = envelope.get("sequenceId")
    sequence_id = sequence_id if _is_uint64(sequence_id) else None
    return GroupStates(group, tuple(items), snapshot, sequence_id)


def _stream_answer(kind: str, envelope: dict[str, Any]) -> StreamAnswer | None:
    stream_id = envelope.get("streamId")
    if not isinstance(stream_id, str):
        return None
    error = envelope.get("error")
    if kind == "streamClosed":
        detail = (
            AckErrorDetail(_str(error, "name"), _str(error, "message"))
            if isinstance(error, dict)
            else None
        )
        return StreamAnswer(stream_id, True, error=detail)
    expected = envelope.get("expectedSequenceId")
    if not _is_uint64(expected):
        return None
    nack = AckErrorDetail(_str(envelope, "name"), _str(envelope, "message"))
    return StreamAnswer(stream_id, False, expected, nack if kind == "streamNack" else None)


def _stream_info(envelope: dict[str, Any]) -> StreamInfo | None:
    raw = envelope.get("stream")
    if not isinstance(raw, dict):
        return None
    stream_id, sequence_id = raw.get("streamId"), raw.get("streamSequenceId")
    if not isinstance(stream_id, str) or not _is_uint64(sequence_id):
        return None
    error = raw.get("error")
    described = None
    if isinstance(error, dict):
        code = error.get("userErrorCode")
        described = (
            _str(error, "name"),
            _str(error, "message"),
            code if isinstance(code, str) else None,
        )
    return StreamInfo(stream_id, sequence_id, raw.get("endOfStream") is True, described)


def _str_metadata(envelope: dict[str, Any]) -> dict[str, str] | None:
    raw = envelope.get("metadata")
    if not isinstance(raw, dict):
        return None
    return {k: v for k, v in raw.items() if isinstance(v, str)} or None


def _payload_of(envelope: dict[str, Any]) -> tuple[Payload, DataType] | None:
    """The decoded ``data`` of a downstream envelope and its type; None for an unknown type."""
    data_type = parse_data_type(envelope.get("dataType", "json"))
    if data_type is None:
        return None
    data: Payload = envelope.get("data")
    if data_type is DataType.TEXT:
        if not isinstance(data, str):
            raise ProtocolViolation("'data' must be a string for dataType 'text'.")
    elif data_type is not DataType.JSON:
        if not isinstance(data, str):
            raise ProtocolViolation(f"'data' must be base64 for dataType '{data_type}'.")
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolViolation(f"'data' is not valid base64 for '{data_type}'.") from None
    return data, data_type


def _data_message(envelope: dict[str, Any]) -> GroupMessage | ServerMessage | None:
    """A downstream ``message`` envelope; None for an unknown ``from`` or ``dataType``."""
    payload = _payload_of(envelope)
    if payload is None:
        return None
    data, data_type = payload
    sequence_id = envelope.get("sequenceId")
    if sequence_id is not None and not _is_uint64(sequence_id):
        raise ProtocolViolation("'sequenceId' must be an unsigned integer.")
    metadata = _str_metadata(envelope)
    source = envelope.get("from")
    if source == "group":
        group = envelope.get("group")
        if not isinstance(group, str):
            raise ProtocolViolation("A group message needs a 'group'.")
        from_user_id = _str_or_none(envelope, "fromUserId")
        stream = _stream_info(envelope)
        return GroupMessage(group, data, data_type, from_user_id, sequence_id, metadata, stream)
    if source == "server":
        return ServerMessage(data, data_type, sequence_id, metadata)
    return None


JSON = JsonCodec()
RELIABLE_JSON = ReliableJsonCodec()

__all__ = [
    "JSON",
    "RELIABLE_JSON",
    "RELIABLE_SUBPROTOCOL",
    "SUBPROTOCOL",
    "JsonCodec",
    "encode_invoke_response",
]
