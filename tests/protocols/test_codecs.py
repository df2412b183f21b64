"""Codecs as pure bytes in, values out (spec 4.3-4.8)."""

from __future__ import annotations

import json

import pytest
from google.protobuf import any_pb2

from webpubsub.core.errors import Forbidden, InvalidRequest, ProtocolViolation
from webpubsub.core.groupstate import StateItem
from webpubsub.core.message import DataType, Message, Source
from webpubsub.core.requests import (
    CancelInvocation,
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
from webpubsub.protocols import (
    JSON,
    PROTOBUF,
    RAW,
    RELIABLE_JSON,
    RELIABLE_PROTOBUF,
    select_codec,
)
from webpubsub.protocols.frames import header
from webpubsub.protocols.proto.webpubsub_pb2 import (
    DownstreamMessage,
    MessageData,
    UpstreamMessage,
)
from webpubsub.protocols.protobuf import varint


def payload_of(frame: bytes) -> bytes:
    """The payload of one unmasked server frame."""
    length = frame[1] & 0x7F
    offset = 2
    if length == 126:
        length, offset = int.from_bytes(frame[2:4], "big"), 4
    elif length == 127:
        length, offset = int.from_bytes(frame[2:10], "big"), 10
    assert len(frame) == offset + length
    return frame[offset:]


class TestSelection:
    def test_first_supported_predefined_wins(self) -> None:
        assert (
            select_codec(["foo", "protobuf.webpubsub.azure.v1", "json.webpubsub.azure.v1"])
            is PROTOBUF
        )
        assert select_codec(["json.reliable.webpubsub.azure.v1"]) is RELIABLE_JSON

    def test_no_predefined_means_simple_client(self) -> None:
        assert select_codec([]) is RAW
        assert select_codec(["mqtt", "chat"]) is RAW


class TestFrames:
    @pytest.mark.parametrize("length", [0, 125, 126, 65535, 65536])
    def test_header_lengths(self, length: int) -> None:
        frame = header(0x1, length) + b"x" * length
        assert payload_of(frame) == b"x" * length


class TestJsonDecode:
    def test_sdk_frames(self) -> None:
        assert JSON.decode(b'{"type":"joinGroup","group":"room1","ackId":1}', True) == JoinGroup(
            "room1", 1
        )
        assert JSON.decode(b'{"type":"leaveGroup","group":"room1","ackId":5}', True) == LeaveGroup(
            "room1", 5
        )
        assert JSON.decode(
            b'{"type":"sendToGroup","group":"room1","ackId":2,"dataType":"json",'
            b'"data":{"hi":1},"noEcho":false}',
            True,
        ) == SendToGroup("room1", b'{"hi":1}', DataType.JSON, 2, False)
        assert JSON.decode(
            b'{"type":"sendToGroup","group":"room1","dataType":"binary","data":"AQID",'
            b'"noEcho":true}',
            True,
        ) == SendToGroup("room1", b"\x01\x02\x03", DataType.BINARY, None, True)
        assert JSON.decode(
            b'{"type":"event","event":"myevent","ackId":4,"dataType":"text","data":"t"}', True
        ) == SendEvent("myevent", b"t", DataType.TEXT, 4)
        assert JSON.decode(b'{"type":"sequenceAck","sequenceId":1}', True) == SequenceAck(1)
        assert JSON.decode(b'{"type":"ping"}', True) == Ping()

    def test_data_type_defaults_to_json(self) -> None:
        request = JSON.decode(b'{"type":"event","event":"e","data":[1,2]}', True)
        assert request == SendEvent("e", b"[1,2]", DataType.JSON)

    @pytest.mark.parametrize(
        "frame",
        [
            b"not json",
            b"[1]",
            b'{"no":"type"}',
            b'{"type":"joinGroup","group":"g","ackId":-1}',
            b'{"type":"joinGroup","group":"g","ackId":true}',
            b'{"type":"sequenceAck"}',
        ],
    )
    def test_invalid_frames_are_protocol_violations(self, frame: bytes) -> None:
        with pytest.raises(ProtocolViolation) as raised:
            JSON.decode(frame, True)
        assert raised.value.code == 1008

    @pytest.mark.parametrize(
        "frame",
        [
            b'{"type":"joinGroup","ackId":3}',
            b'{"type":"sendToGroup","group":"g","ackId":3,"dataType":"binary","data":"@@"}',
            b'{"type":"sendToGroup","group":"g","ackId":3,"dataType":"text","data":1}',
            b'{"type":"sendToGroup","group":"g","ackId":3,"dataType":"xml","data":"x"}',
            b'{"type":"event","ackId":3,"data":"x"}',
        ],
    )
    def test_bad_arguments_keep_the_ack_id(self, frame: bytes) -> None:
        with pytest.raises(InvalidRequest) as raised:
            JSON.decode(frame, True)
        assert raised.value.ack_id == 3

    def test_unknown_and_unsupported_types(self) -> None:
        assert JSON.decode(b'{"type":"newThing","ackId":9}', True) == Unsupported("newThing", 9)

    def test_group_state_frames(self) -> None:
        decode = JSON.decode
        assert decode(
            b'{"type":"setGroupState","group":"r","state":{"a":"1"},"ackId":1}', True
        ) == SetGroupState("r", {"a": "1"}, 1)
        assert decode(b'{"type":"setGroupState","group":"r","state":null}', True) == (
            SetGroupState("r")
        )
        assert decode(b'{"type":"unsubscribeGroupState","group":"r","ackId":2}', True) == (
            SubscribeGroupState("r", 2, subscribe=False)
        )
        for bad in (b'"x"', b'{"a":1}', b'{"a b":"1"}'):
            with pytest.raises(InvalidRequest) as raised:
                decode(b'{"type":"setGroupState","group":"r","ackId":3,"state":' + bad + b"}", True)
            assert raised.value.ack_id == 3
        with pytest.raises(InvalidRequest):
            decode(b'{"type":"subscribeGroupState","ackId":4}', True)

    def test_stream_frames(self) -> None:
        decode = JSON.decode
        assert decode(
            b'{"type":"sendToGroup","group":"g","noEcho":true,'
            b'"stream":{"streamId":"s","idleTimeoutMs":500}}',
            True,
        ) == StreamStart("g", "s", True, 500)
        assert decode(b'{"type":"streamData","streamId":"s"}', True) == StreamData("s")
        assert decode(
            b'{"type":"streamData","streamId":"s","streamSequenceId":2,'
            b'"dataType":"json","data":{"x":1}}',
            True,
        ) == StreamData("s", 2, b'{"x":1}', DataType.JSON)
        assert decode(b'{"type":"streamEnd","streamId":"s"}', True) == StreamEnd("s")
        assert decode(
            b'{"type":"streamEnd","streamId":"s","error":{"message":"m","userErrorCode":"E"}}',
            True,
        ) == StreamEnd("s", ("m", "E"))
        for bad in (
            b'{"type":"streamData","streamId":"s","streamSequenceId":1}',
            b'{"type":"streamData","streamId":"s","streamSequenceId":0,"dataType":"text","data":""}',
            b'{"type":"streamData","streamId":"s","streamSequenceId":1.5,"dataType":"text","data":""}',
            b'{"type":"streamData","streamId":"s","streamSequenceId":1,"dataType":"x","data":""}',
            b'{"type":"streamEnd","streamId":"s","error":"boom"}',
        ):
            assert isinstance(decode(bad, True), StreamInvalid), bad
        for broken in (
            b'{"type":"streamData"}',
            b'{"type":"streamEnd","streamId":""}',
            b'{"type":"sendToGroup","group":"g","stream":{}}',
            b'{"type":"sendToGroup","group":"g","stream":"s"}',
        ):
            with pytest.raises(ProtocolViolation):
                decode(broken, True)

    def test_invoke(self) -> None:
        frame = (
            b'{"type":"invoke","invocationId":"1","target":"event","event":"e",'
            b'"dataType":"json","data":{"a": 1},"metadata":{"K":"v"}}'
        )
        assert JSON.decode(frame, True) == Invoke("1", "e", b'{"a": 1}', DataType.JSON, {"K": "v"})
        assert JSON.decode(b'{"type":"invoke","invocationId":"2","event":"e"}', True) == Invoke(
            "2", "e"
        )
        bad = JSON.decode(b'{"type":"invoke","invocationId":"3","target":"group"}', True)
        assert isinstance(bad, Invoke) and bad.error
        assert JSON.decode(b'{"type":"cancelInvocation","invocationId":"1"}', True) == (
            CancelInvocation("1")
        )
        for frame in (
            b'{"type":"invoke","event":"e"}',
            b'{"type":"cancelInvocation","invocationId":1}',
        ):
            with pytest.raises(ProtocolViolation):
                JSON.decode(frame, True)


class TestJsonEncode:
    def test_server_message_of_each_type(self) -> None:
        cases = [
            (Message(b'{"a": 1}', DataType.JSON), {"a": 1}),
            (Message("héllo".encode(), DataType.TEXT), "héllo"),
            (Message(b"\x00\xff", DataType.BINARY), "AP8="),
        ]
        for message, data in cases:
            body = json.loads(payload_of(JSON.encode_message(message)))
            assert body == {
                "type": "message",
                "from": "server",
                "dataType": message.data_type.value,
                "data": data,
            }

    def test_group_message_from_a_user(self) -> None:
        message = Message(b"x", DataType.TEXT, Source.GROUP, "g", "u1")
        assert json.loads(payload_of(JSON.encode_message(message))) == {
            "type": "message",
            "from": "group",
            "group": "g",
            "fromUserId": "u1",
            "dataType": "text",
            "data": "x",
        }

    def test_ack_and_system_messages(self) -> None:
        assert json.loads(payload_of(JSON.encode_ack(1, Forbidden("no")) or b"")) == {
            "type": "ack",
            "ackId": 1,
            "success": False,
            "error": {"name": "Forbidden", "message": "no"},
        }
        connected = RELIABLE_JSON.encode_connected("c", None, "tok") or b""
        assert json.loads(payload_of(connected)) == {
            "type": "system",
            "event": "connected",
            "userId": None,
            "connectionId": "c",
            "reconnectionToken": "tok",
        }

    def test_reliable_frames_share_the_encoding(self) -> None:
        encoded = RELIABLE_JSON.encode_message(Message(b"[1]", DataType.JSON))
        first = RELIABLE_JSON.sequence(encoded, 1)
        second = RELIABLE_JSON.sequence(encoded, 1000)
        assert first[-1] is encoded and second[-1] is encoded
        assert json.loads(payload_of(b"".join(second))) == {
            "sequenceId": 1000,
            "type": "message",
            "from": "server",
            "dataType": "json",
            "data": [1],
        }


class TestProtobuf:
    def test_decode_each_request(self) -> None:
        join = UpstreamMessage(
            join_group_message=UpstreamMessage.JoinGroupMessage(group="g", ack_id=1)
        )
        assert PROTOBUF.decode(join.SerializeToString(), False) == JoinGroup("g", 1)
        send = UpstreamMessage(
            send_to_group_message=UpstreamMessage.SendToGroupMessage(
                group="g", data=MessageData(json_data='{"a":1}'), no_echo=True
            )
        )
        assert PROTOBUF.decode(send.SerializeToString(), False) == SendToGroup(
            "g", b'{"a":1}', DataType.JSON, None, True
        )
        event = UpstreamMessage(
            event_message=UpstreamMessage.EventMessage(
                event="e", data=MessageData(binary_data=b"\x01"), ack_id=7
            )
        )
        assert PROTOBUF.decode(event.SerializeToString(), False) == SendEvent(
            "e", b"\x01", DataType.BINARY, 7
        )
        ping = UpstreamMessage(ping_message=UpstreamMessage.PingMessage())
        assert PROTOBUF.decode(ping.SerializeToString(), False) == Ping()

    def test_garbage_and_text_frames_are_violations(self) -> None:
        with pytest.raises(ProtocolViolation):
            PROTOBUF.decode(b"\xff\xff\xff", False)
        with pytest.raises(ProtocolViolation):
            PROTOBUF.decode(b"{}", True)

    def test_invalid_json_data_is_a_bad_argument(self) -> None:
        send = UpstreamMessage(
            send_to_group_message=UpstreamMessage.SendToGroupMessage(
                group="g", ack_id=2, data=MessageData(json_data="{oops")
            )
        )
        with pytest.raises(InvalidRequest):
            PROTOBUF.decode(send.SerializeToString(), False)

    def test_data_message_of_each_type(self) -> None:
        packed = any_pb2.Any(type_url="t/x", value=b"v").SerializeToString()
        for message, field in [
            (Message(b"t", DataType.TEXT), "text_data"),
            (Message(b'{"a":1}', DataType.JSON), "json_data"),
            (Message(b"\x01", DataType.BINARY), "binary_data"),
            (Message(packed, DataType.PROTOBUF), "protobuf_data"),
        ]:
            down = DownstreamMessage.FromString(payload_of(PROTOBUF.encode_message(message)))
            assert down.data_message.data.WhichOneof("data") == field
            assert getattr(down.data_message, "from") == "server"

    def test_reliable_sequence_id_is_appended(self) -> None:
        message = Message(b"hi", DataType.TEXT, Source.GROUP, "g")
        encoded = RELIABLE_PROTOBUF.encode_message(message)
        for sequence_id in (1, 300, 2**40):
            frame = b"".join(RELIABLE_PROTOBUF.sequence(encoded, sequence_id))
            down = DownstreamMessage.FromString(payload_of(frame))
            assert down.data_message.sequence_id == sequence_id
            assert down.data_message.group == "g"
            assert down.data_message.data.text_data == "hi"

    def test_varint(self) -> None:
        assert varint(0) == b"\x00"
        assert varint(300) == b"\xac\x02"


class TestRaw:
    def test_payload_only(self) -> None:
        assert payload_of(RAW.encode_message(Message(b'"q"', DataType.JSON))) == b'"q"'
        assert RAW.encode_message(Message(b"\x01", DataType.BINARY))[0] == 0x82
        assert RAW.decode(b"x", False) == SendEvent("message", b"x", DataType.BINARY)


def up(**message: object) -> bytes:
    return UpstreamMessage(**message).SerializeToString()  # type: ignore[arg-type]


class TestProtobufNext:
    """Invocation, streams, metadata and TTL in protobuf (spec-next 8)."""

    def test_invoke_and_cancel(self) -> None:
        invoke = UpstreamMessage.InvokeEventMessage(
            event="e", invocation_id="7", data=MessageData(text_data="hi"), metadata={"k": "v"}
        )
        assert PROTOBUF.decode(up(invoke_event_message=invoke), False) == Invoke(
            "7", "e", b"hi", DataType.TEXT, {"k": "v"}
        )
        bare = UpstreamMessage.InvokeEventMessage(event="e", invocation_id="8")
        assert PROTOBUF.decode(up(invoke_event_message=bare), False) == Invoke("8", "e")
        nameless = UpstreamMessage.InvokeEventMessage(invocation_id="9")
        refused = PROTOBUF.decode(up(invoke_event_message=nameless), False)
        assert isinstance(refused, Invoke) and refused.error is not None
        cancel = UpstreamMessage.CancelInvocationMessage(invocation_id="7")
        assert PROTOBUF.decode(up(cancel_invocation_message=cancel), False) == (
            CancelInvocation("7")
        )

    def test_invoke_response(self) -> None:
        ok = PROTOBUF.encode_invoke_response("1", data=b'{"a":1}', data_type=DataType.JSON)
        down = DownstreamMessage.FromString(payload_of(ok)).invoke_response_message
        assert (down.invocation_id, down.success, down.data.json_data) == ("1", True, '{"a":1}')
        failed = PROTOBUF.encode_invoke_response("2", error=("NotFound", "none"))
        down = DownstreamMessage.FromString(payload_of(failed)).invoke_response_message
        assert (down.success, down.error.name, down.HasField("data")) == (False, "NotFound", False)

    def test_stream_frames(self) -> None:
        start = UpstreamMessage.SendToGroupMessage(
            group="g", ack_id=3, stream=UpstreamMessage.StreamStartInfo(stream_id="s")
        )
        assert PROTOBUF.decode(up(send_to_group_message=start), False) == StreamStart("g", "s")
        start.stream.idle_timeout_ms = 0
        bad = PROTOBUF.decode(up(send_to_group_message=start), False)
        assert isinstance(bad, StreamInvalid) and bad.start
        keepalive = UpstreamMessage.StreamDataMessage(stream_id="s")
        assert PROTOBUF.decode(up(stream_data_message=keepalive), False) == StreamData("s")
        fragment = UpstreamMessage.StreamDataMessage(
            stream_id="s", stream_sequence_id=1, data=MessageData(binary_data=b"\x01")
        )
        assert PROTOBUF.decode(up(stream_data_message=fragment), False) == StreamData(
            "s", 1, b"\x01", DataType.BINARY
        )
        half = UpstreamMessage.StreamDataMessage(stream_id="s", stream_sequence_id=2)
        assert isinstance(PROTOBUF.decode(up(stream_data_message=half), False), StreamInvalid)
        end = UpstreamMessage.StreamEndMessage(stream_id="s")
        end.error.message = "boom"
        end.error.user_error_code = "E1"
        assert PROTOBUF.decode(up(stream_end_message=end), False) == StreamEnd("s", ("boom", "E1"))
        nameless = UpstreamMessage.StreamEndMessage()
        with pytest.raises(ProtocolViolation):
            PROTOBUF.decode(up(stream_end_message=nameless), False)

    def test_metadata_and_ttl(self) -> None:
        send = UpstreamMessage.SendToGroupMessage(
            group="g", ack_id=1, ttl_seconds=30, metadata={"Trace": "t"}
        )
        assert PROTOBUF.decode(up(send_to_group_message=send), False) == SendToGroup(
            "g", b"", DataType.TEXT, 1, False, {"Trace": "t"}, 30
        )
        send.ttl_seconds = 301
        with pytest.raises(InvalidRequest):
            PROTOBUF.decode(up(send_to_group_message=send), False)
        send.ttl_seconds = 0
        send.metadata["bad key"] = "x"
        with pytest.raises(InvalidRequest):
            PROTOBUF.decode(up(send_to_group_message=send), False)

    def test_group_state(self) -> None:
        watch = UpstreamMessage.SubscribeGroupStateMessage(group="g", ack_id=4)
        assert PROTOBUF.decode(up(subscribe_group_state_message=watch), False) == (
            SubscribeGroupState("g", 4)
        )
        unwatch = UpstreamMessage.UnsubscribeGroupStateMessage(group="g")
        assert PROTOBUF.decode(up(unsubscribe_group_state_message=unwatch), False) == (
            SubscribeGroupState("g", None, subscribe=False)
        )
        clear = UpstreamMessage.SetGroupStateMessage(group="g", ack_id=5)
        assert PROTOBUF.decode(up(set_group_state_message=clear), False) == SetGroupState(
            "g", None, 5
        )
        clear.state.entries["a"] = "1"
        assert PROTOBUF.decode(up(set_group_state_message=clear), False) == SetGroupState(
            "g", {"a": "1"}, 5
        )
        clear.state.entries["a b"] = "1"
        with pytest.raises(InvalidRequest):
            PROTOBUF.decode(up(set_group_state_message=clear), False)
        item = StateItem("c1", "alice", {"a": "1"}, 7)
        encoded = RELIABLE_PROTOBUF.encode_group_state("groupStateSnapshot", "g", [item])
        frame = b"".join(RELIABLE_PROTOBUF.sequence_group_state("groupStateSnapshot", encoded, 300))
        snapshot = DownstreamMessage.FromString(payload_of(frame)).group_state_snapshot_message
        assert (snapshot.group, snapshot.sequence_id) == ("g", 300)
        [entry] = snapshot.items
        assert (entry.connection_id, entry.user_id, dict(entry.state.entries)) == (
            "c1",
            "alice",
            {"a": "1"},
        )
        gone = StateItem("c1", None, None, 8)
        frame = PROTOBUF.encode_group_state("groupStateUpdate", "g", [gone])
        update = DownstreamMessage.FromString(payload_of(frame)).group_state_update_message
        assert not update.items[0].HasField("state") and not update.HasField("sequence_id")
