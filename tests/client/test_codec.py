"""The client side of the shared codecs (``webpubsub.protocols``): requests out, messages in.

Each check goes through the service's half of the same codec, so both ends agree by
construction: a client-encoded request decodes to itself on the service side, and whatever
the service encodes decodes to the expected value on the client side.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from google.protobuf import any_pb2, wrappers_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.client.pair import FakeSocket
from webpubsub.core.errors import Forbidden, ProtocolViolation
from webpubsub.core.message import DataType, Message, Source
from webpubsub.core.requests import (
    JoinGroup,
    LeaveGroup,
    Ping,
    SendEvent,
    SendToGroup,
    SequenceAck,
    Unsupported,
)
from webpubsub.protocols import JSON, PROTOBUF, RELIABLE_JSON, RELIABLE_PROTOBUF
from webpubsub.protocols.client import CLIENT_CODECS, ClientCodec, client_codec
from webpubsub.protocols.downstream import (
    Ack,
    AckErrorDetail,
    Connected,
    Disconnected,
    GroupMessage,
    Pong,
    ServerMessage,
    decode_payload,
    encode_payload,
)
from webpubsub.protocols.proto.webpubsub_pb2 import DownstreamMessage

CODECS: list[Any] = [JSON, RELIABLE_JSON, PROTOBUF, RELIABLE_PROTOBUF]
IDS = [c.subprotocol for c in CODECS]
ANY = any_pb2.Any()
ANY.Pack(wrappers_pb2.StringValue(value="packed"))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
payloads = st.one_of(
    json_values.map(lambda v: (v, DataType.JSON)),
    st.text().map(lambda v: (v, DataType.TEXT)),
    st.binary().map(lambda v: (v, DataType.BINARY)),
    st.just((ANY.SerializeToString(), DataType.PROTOBUF)),
)
ack_ids = st.none() | st.integers(0, 2**64 - 1)

# No per-example deadline: a loaded CI machine must not turn slowness into failures.
examples = settings(max_examples=60, deadline=None)


def unframe(frame: bytes | tuple[bytes, ...] | None) -> bytes | str:
    """The message a client reads from one server frame (or the pieces of one)."""
    assert frame is not None
    socket = FakeSocket()
    socket.send(b"".join(frame) if isinstance(frame, tuple) else frame)
    [message] = socket.messages()
    return message


def as_client_reads(codec: Any, message: Message, sequence_id: int = 7) -> bytes | str:
    encoded = codec.encode_message(message)
    if codec.is_reliable:
        return unframe(codec.sequence(encoded, sequence_id))
    return unframe(encoded)


class TestRequests:
    """Client to service (spec 4.3, 4.8)."""

    def test_json_frames_are_the_sdks(self) -> None:
        # Spec 4.3 "Exact frames the SDKs produce".
        frames = {
            JoinGroup("room1", 1): '{"type":"joinGroup","group":"room1","ackId":1}',
            SendToGroup("room1", b'{"hi":1}', DataType.JSON, 2): (
                '{"type":"sendToGroup","group":"room1","ackId":2,"dataType":"json",'
                '"data":{"hi":1},"noEcho":false}'
            ),
            SendToGroup("room1", b"\x01\x02\x03", DataType.BINARY, None): (
                '{"type":"sendToGroup","group":"room1","dataType":"binary","data":"AQID",'
                '"noEcho":false}'
            ),
            SendEvent("myevent", b'{"e":1}', DataType.JSON, 4): (
                '{"type":"event","event":"myevent","ackId":4,"dataType":"json","data":{"e":1}}'
            ),
            LeaveGroup("room1", 5): '{"type":"leaveGroup","group":"room1","ackId":5}',
            SequenceAck(1): '{"type":"sequenceAck","sequenceId":1}',
            Ping(): '{"type":"ping"}',
        }
        for request, frame in frames.items():
            assert JSON.encode_request(request).decode() == frame

    @pytest.mark.parametrize("codec", CODECS, ids=IDS)
    @examples
    @given(
        group=st.text(min_size=1),
        payload=payloads,
        ack_id=ack_ids,
        no_echo=st.booleans(),
    )
    def test_send_to_group_round_trips(
        self,
        codec: Any,
        group: str,
        payload: tuple[Any, DataType],
        ack_id: int | None,
        no_echo: bool,
    ) -> None:
        data, data_type = payload
        request = SendToGroup(group, encode_payload(data, data_type), data_type, ack_id, no_echo)
        decoded = codec.decode(codec.encode_request(request), codec.text_frames)
        assert decoded == request

    @pytest.mark.parametrize("codec", CODECS, ids=IDS)
    @examples
    @given(event=st.text(min_size=1), payload=payloads, ack_id=ack_ids)
    def test_event_round_trips(
        self, codec: Any, event: str, payload: tuple[Any, DataType], ack_id: int | None
    ) -> None:
        data, data_type = payload
        request = SendEvent(event, encode_payload(data, data_type), data_type, ack_id)
        assert codec.decode(codec.encode_request(request), codec.text_frames) == request

    @pytest.mark.parametrize("codec", CODECS, ids=IDS)
    def test_other_requests_round_trip(self, codec: Any) -> None:
        for request in (
            JoinGroup("g", 0),
            JoinGroup("g.with.dots"),
            LeaveGroup("g", 2**64 - 1),
            SequenceAck(2**64 - 1),
            Ping(),
        ):
            assert codec.decode(codec.encode_request(request), codec.text_frames) == request

    @pytest.mark.parametrize("codec", CODECS, ids=IDS)
    def test_unsupported_cannot_be_sent(self, codec: Any) -> None:
        with pytest.raises(TypeError):
            codec.encode_request(Unsupported("invoke"))

    def test_codec_lookup(self) -> None:
        assert next(iter(CLIENT_CODECS)) == "json.reliable.webpubsub.azure.v1"
        codec: ClientCodec = client_codec("protobuf.webpubsub.azure.v1")
        assert codec is PROTOBUF and not codec.text_frames and not codec.is_reliable
        with pytest.raises(ValueError, match="unknown subprotocol"):
            client_codec("mqtt")


class TestDownstream:
    """Service to client (spec 4.4, 4.8): what the service encodes, the client decodes."""

    @pytest.mark.parametrize("codec", CODECS, ids=IDS)
    @examples
    @given(payload=payloads, user=st.none() | st.text(min_size=1))
    def test_group_messages(
        self, codec: Any, payload: tuple[Any, DataType], user: str | None
    ) -> None:
        data, data_type = payload
        message = Message(encode_payload(data, data_type), data_type, Source.GROUP, "g.1", user)
        decoded = codec.decode_downstream(as_client_reads(codec, message))
        is_json = codec.text_frames
        sequence_id = 7 if codec.is_reliable else None
        expected = GroupMessage("g.1", data, data_type, user if is_json else None, sequence_id)
        assert decoded == expected

    @pytest.mark.parametrize("codec", CODECS, ids=IDS)
    @examples
    @given(payload=payloads)
    def test_server_messages(self, codec: Any, payload: tuple[Any, DataType]) -> None:
        data, data_type = payload
        message = Message(encode_payload(data, data_type), data_type)
        decoded = codec.decode_downstream(as_client_reads(codec, message, 2**40))
        sequence_id = 2**40 if codec.is_reliable else None
        assert decoded == ServerMessage(data, data_type, sequence_id)

    @pytest.mark.parametrize("codec", CODECS, ids=IDS)
    def test_system_messages_acks_and_pong(self, codec: Any) -> None:
        token = "tok" if codec.is_reliable else None
        cases = [
            (codec.encode_connected("c1", "u1", token), Connected("c1", "u1", token)),
            (codec.encode_connected("c1", None, token), Connected("c1", None, token)),
            (codec.encode_disconnected("Bye."), Disconnected("Bye.")),
            (codec.encode_ack(3, None), Ack(3, True)),
            (
                codec.encode_ack(4, Forbidden("No way.")),
                Ack(4, False, AckErrorDetail("Forbidden", "No way.")),
            ),
            (codec.encode_pong(), Pong()),
        ]
        for frame, expected in cases:
            assert codec.decode_downstream(unframe(frame)) == expected

    def test_duplicate_ack(self) -> None:
        ack = JSON.decode_downstream(
            '{"type":"ack","ackId":1,"success":false,"error":{"name":"Duplicate","message":"x"}}'
        )
        assert isinstance(ack, Ack) and ack.is_duplicate

    @pytest.mark.parametrize(
        "text",
        [
            '{"type":"groupStateUpdate","group":"g"}',
            '{"type":"system","event":"somethingNew"}',
            '{"type":"message","from":"somewhere","dataType":"text","data":"x"}',
            '{"type":"message","from":"server","dataType":"future","data":"x"}',
        ],
    )
    def test_unknown_messages_are_skipped(self, text: str) -> None:
        assert JSON.decode_downstream(text) is None

    @pytest.mark.parametrize(
        "text",
        [
            "not json",
            "[1]",
            '{"type":"ack","ackId":-1,"success":true}',
            '{"type":"ack","ackId":1}',
            '{"type":"system","event":"connected"}',
            '{"type":"message","from":"group","dataType":"text","data":"no group"}',
            '{"type":"message","from":"server","dataType":"text","data":1}',
            '{"type":"message","from":"server","dataType":"binary","data":"AQ"}',
            '{"type":"message","from":"server","dataType":"text","data":"x","sequenceId":-1}',
        ],
    )
    def test_invalid_json_messages(self, text: str) -> None:
        with pytest.raises(ProtocolViolation):
            JSON.decode_downstream(text)

    def test_json_defaults_to_json_data(self) -> None:
        decoded = JSON.decode_downstream('{"type":"message","from":"server","data":[1]}')
        assert decoded == ServerMessage([1], DataType.JSON)

    def test_binary_is_padded_base64(self) -> None:
        envelope = json.loads(as_client_reads(JSON, Message(b"\xff", DataType.BINARY)))
        assert envelope["data"] == base64.b64encode(b"\xff").decode() == "/w=="

    def test_invalid_protobuf_messages(self) -> None:
        with pytest.raises(ProtocolViolation):
            PROTOBUF.decode_downstream("text frame")
        with pytest.raises(ProtocolViolation):
            PROTOBUF.decode_downstream(b"\xff\xff")
        bad_json = DownstreamMessage()
        bad_json.data_message.data.json_data = "{"
        setattr(bad_json.data_message, "from", "server")
        with pytest.raises(ProtocolViolation):
            PROTOBUF.decode_downstream(bad_json.SerializeToString())
        no_data = DownstreamMessage()
        setattr(no_data.data_message, "from", "server")
        assert PROTOBUF.decode_downstream(no_data.SerializeToString()) is None
        assert PROTOBUF.decode_downstream(b"") is None  # an empty DownstreamMessage


class TestPayloads:
    """Values to payload bytes and back (``encode_payload``/``decode_payload``)."""

    @examples
    @given(payload=payloads)
    def test_round_trip(self, payload: tuple[Any, DataType]) -> None:
        data, data_type = payload
        assert decode_payload(encode_payload(data, data_type), data_type) == data

    def test_protobuf_messages_are_packed(self) -> None:
        value = wrappers_pb2.StringValue(value="packed")
        assert encode_payload(value, DataType.PROTOBUF) == ANY.SerializeToString()
        assert encode_payload(ANY, "protobuf") == ANY.SerializeToString()

    @pytest.mark.parametrize(
        ("data", "data_type", "error"),
        [
            (object(), "json", TypeError),
            (float("nan"), "json", ValueError),
            (b"x", "text", TypeError),
            ("x", "binary", TypeError),
            ("x", "protobuf", TypeError),
            (b"\xff", "protobuf", ValueError),
            ("x", "xml", ValueError),
        ],
    )
    def test_errors(self, data: Any, data_type: str, error: type[Exception]) -> None:
        with pytest.raises(error):
            encode_payload(data, data_type)
