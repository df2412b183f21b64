"""Client JSON payloads: checked once, relayed byte for byte (``core/jsontext.py``).

Receivers get the exact text of ``data`` (numbers, duplicate keys, spacing); what not every
client can parse (NaN, infinity, lone surrogates, nesting past ``MAX_DEPTH``) is refused
with an ack error instead of reaching them.
"""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webpubsub.core import jsontext
from webpubsub.core.errors import InvalidRequest, ProtocolViolation
from webpubsub.core.message import DataType, Message, Source
from webpubsub.core.requests import SendEvent, SendToGroup
from webpubsub.protocols import JSON, PROTOBUF, RELIABLE_JSON
from webpubsub.protocols.json import PEEK_BYTES
from webpubsub.protocols.proto.webpubsub_pb2 import MessageData, UpstreamMessage

from .test_codecs import payload_of

DEEPEST = jsontext.MAX_DEPTH


def send(data: str, *, ack: str = ',"ackId":7', data_type: str = ',"dataType":"json"') -> bytes:
    """A sendToGroup frame as the JS client writes it, with ``data`` as raw JSON text."""
    text = '{"type":"sendToGroup","group":"g"' + ack + data_type + ',"data":' + data + "}"
    return text.encode("utf-8")


def nested(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


class TestRelayedAsSent:
    @pytest.mark.parametrize(
        "data",
        [
            '{"price":1.10,"big":12345678901234567.5,"e":1E+2,"neg":-0.0}',
            '{"a":1,"a":2,"a":{"a":3}}',  # duplicate keys, kept
            '{ "spaced" : [ 1 , 2 ] }',
            '"caf\\u00e9 \\ud83d\\ude00 \\\\ud800"',  # escapes as sent; a pair; no lone one
            '"café 😀"',  # non-ASCII bytes
            "12345678901234567890123456789",
            "null",
        ],
    )
    def test_json_data_is_the_exact_text(self, data: str) -> None:
        request = JSON.decode(send(data), True)
        assert isinstance(request, SendToGroup)
        assert request.data == data.encode("utf-8")
        assert request.data_type is DataType.JSON
        message = Message(request.data, DataType.JSON, Source.GROUP, "g")
        body = payload_of(JSON.encode_message(message))
        assert body.endswith(b',"data":' + data.encode("utf-8") + b"}")
        json.loads(body)  # still one JSON document

    def test_the_python_sdk_spacing_and_an_absent_data_type(self) -> None:
        frame = b'{"type": "event", "event": "e", "ackId": 1, "dataType": "json", "data": [1.10]}'
        request = JSON.decode(frame, True)
        assert isinstance(request, SendEvent) and request.data == b"[1.10]"
        request = JSON.decode(send('{"x": 1.50}', data_type=""), True)
        assert isinstance(request, SendToGroup) and request.data == b'{"x": 1.50}'

    def test_a_binary_frame_and_the_last_of_duplicate_data_members(self) -> None:
        frame = b'{"type":"sendToGroup","group":"g","data":1.0,"data":2.50}'
        request = JSON.decode(frame, False)
        assert isinstance(request, SendToGroup) and request.data == b"2.50"

    def test_other_data_types_are_unchanged(self) -> None:
        request = JSON.decode(send('"aGk="', data_type=',"dataType":"binary"'), True)
        assert isinstance(request, SendToGroup) and request.data == b"hi"
        request = JSON.decode(send('"h\\u00e9"', data_type=',"dataType":"text"'), True)
        assert isinstance(request, SendToGroup) and request.data == "hé".encode()

    def test_reliable_json_relays_the_same_text(self) -> None:
        request = RELIABLE_JSON.decode(send("[1.10,1.10]"), True)
        assert isinstance(request, SendToGroup) and request.data == b"[1.10,1.10]"


class TestRefused:
    @pytest.mark.parametrize(
        "data",
        ["NaN", "Infinity", "-Infinity", "[1,NaN]", "1e999", "-1e999", '{"x":[1E400]}'],
    )
    def test_numbers_no_client_can_read(self, data: str) -> None:
        with pytest.raises(InvalidRequest) as refused:
            JSON.decode(send(data), True)
        assert refused.value.ack_id == 7
        assert "not valid JSON" in refused.value.message

    @pytest.mark.parametrize(
        "data", ['"\\ud800"', '"\\uDC00x"', '{"\\udbff":1}', '["a\\ud83d b"]', '"\\\\\\ud800"']
    )
    def test_lone_surrogates_in_json_data(self, data: str) -> None:
        with pytest.raises(InvalidRequest) as refused:
            JSON.decode(send(data), True)
        assert refused.value.ack_id == 7
        assert "surrogate" in refused.value.message

    def test_lone_surrogates_in_text_data_and_in_events(self) -> None:
        with pytest.raises(InvalidRequest) as refused:
            JSON.decode(send('"a\\ud800"', data_type=',"dataType":"text"'), True)
        assert refused.value.ack_id == 7
        frame = b'{"type":"event","event":"e","ackId":9,"dataType":"text","data":"\\udfff"}'
        with pytest.raises(InvalidRequest) as refused:
            JSON.decode(frame, True)
        assert refused.value.ack_id == 9

    def test_an_ack_id_after_the_data_is_still_found(self) -> None:
        frame = b'{"type":"sendToGroup","group":"g","data":[NaN],"ackId":3}'
        with pytest.raises(InvalidRequest) as refused:
            JSON.decode(frame, True)
        assert refused.value.ack_id == 3

    def test_without_an_ack_id_there_is_nobody_to_answer(self) -> None:
        with pytest.raises(InvalidRequest) as refused:
            JSON.decode(send("NaN", ack=""), True)
        assert refused.value.ack_id is None

    def test_invalid_json_is_still_a_protocol_violation(self) -> None:
        for frame in (send("[1,"), send("01"), b'{"type":"ping"} x', b"\xff{}"):
            with pytest.raises(ProtocolViolation):
                JSON.decode(frame, False)

    def test_protobuf_json_data_follows_the_same_rules(self) -> None:
        for bad in ("NaN", "1e999", '"\\ud800"', nested(DEEPEST + 1)):
            upstream = UpstreamMessage()
            send_message = upstream.send_to_group_message
            send_message.group, send_message.ack_id = "g", 5
            send_message.data.CopyFrom(MessageData(json_data=bad))
            with pytest.raises(InvalidRequest) as refused:
                PROTOBUF.decode(upstream.SerializeToString(), False)
            assert refused.value.ack_id == 5


class TestDepth:
    def test_the_documented_depth_is_accepted(self) -> None:
        assert DEEPEST >= 1000
        request = JSON.decode(send(nested(DEEPEST)), True)
        assert isinstance(request, SendToGroup) and request.data == nested(DEEPEST).encode()
        objects = '{"a":' * DEEPEST + "1" + "}" * DEEPEST
        request = JSON.decode(send(objects), True)
        assert isinstance(request, SendToGroup) and len(request.data) == len(objects)

    @pytest.mark.parametrize("limit", [None, 20_000])
    def test_the_python_sdk_spacing_takes_the_same_limit(self, limit: int | None) -> None:
        """Frames whose dataType the fast path cannot see are parsed whole first: the
        envelope is one level more than its data."""
        saved = sys.getrecursionlimit()
        sys.setrecursionlimit(limit or saved)
        try:
            for levels, accepted in ((DEEPEST, True), (DEEPEST + 1, False)):
                frame = '{"type": "sendToGroup", "group": "g", "ackId": 1, "dataType": "json", '
                frame += f'"data": {nested(levels)}}}'
                if accepted:
                    assert JSON.decode(frame.encode(), True)
                else:
                    with pytest.raises(InvalidRequest):
                        JSON.decode(frame.encode(), True)
        finally:
            sys.setrecursionlimit(saved)

    def test_one_level_deeper_is_refused_with_an_ack(self) -> None:
        with pytest.raises(InvalidRequest) as refused:
            JSON.decode(send(nested(DEEPEST + 1)), True)
        assert refused.value.ack_id == 7
        assert f"deeper than {DEEPEST}" in refused.value.message

    def test_much_deeper_is_refused_too(self) -> None:
        with pytest.raises(InvalidRequest):
            JSON.decode(send(nested(100_000)), True)

    def test_the_limit_holds_whatever_the_recursion_limit(self) -> None:
        """Python 3.12+ parse deeper than the recursion limit in C; 3.11 with a raised limit
        does too: the value is measured then, not left to the interpreter."""
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(20_000)
        try:
            with pytest.raises(InvalidRequest):
                JSON.decode(send(nested(DEEPEST + 1)), True)
            assert JSON.decode(send(nested(DEEPEST)), True)
            wide = "[" + ",".join(["[{}]"] * 2000) + "]"  # many brackets, 3 levels
            request = JSON.decode(send(wide), True)
            assert isinstance(request, SendToGroup) and request.data == wide.encode()
        finally:
            sys.setrecursionlimit(limit)

    def test_depth_ignores_brackets_in_strings(self) -> None:
        assert jsontext.depth('[{"a":"[[[[{{"},["]\\"]"]]') == 2
        assert jsontext.depth("1") == 0
        assert jsontext.depth(nested(5)) == 5


class TestPeekAckId:
    """A throttled frame is answered from its head: never parsed in full."""

    def test_the_ack_id_in_front_of_the_data(self) -> None:
        huge = '"' + "x" * 1_000_000 + '"'
        assert JSON.peek_ack_id(send(huge), True) == 7
        assert JSON.peek_ack_id(send("[NaN", ack=',"ackId":8'), True) == 8  # not even JSON

    def test_no_ack_id_in_the_head_is_none(self) -> None:
        assert JSON.peek_ack_id(send("1", ack=""), True) is None
        late = b'{"type":"sendToGroup","group":"g","data":1,"ackId":4}'
        assert JSON.peek_ack_id(late, True) is None  # past the data: not read
        padded = b'{"type":"sendToGroup","group":"' + b"g" * PEEK_BYTES + b'","ackId":4}'
        assert JSON.peek_ack_id(padded, True) is None
        assert JSON.peek_ack_id(b'{"ackId":-1}', True) is None
        assert JSON.peek_ack_id(b"\x00\xff", False) is None

    def test_protobuf(self) -> None:
        upstream = UpstreamMessage()
        upstream.join_group_message.group = "g"
        upstream.join_group_message.ack_id = 11
        assert PROTOBUF.peek_ack_id(upstream.SerializeToString(), False) == 11
        assert PROTOBUF.peek_ack_id(b"\xff\xff", False) is None


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(data=json_values, spacing=st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]))
def test_the_walk_agrees_with_json_loads(data: object, spacing: tuple[str, str]) -> None:
    """Members and the raw span of data are what json.loads sees, whatever the spacing."""
    envelope = {"type": "sendToGroup", "group": "g", "ackId": 1, "data": data, "noEcho": False}
    text = json.dumps(envelope, separators=spacing, ensure_ascii=False)
    members, span = jsontext.members(text, "data")
    assert members == json.loads(text)
    assert span is not None
    assert json.loads(text[span[0] : span[1]]) == json.loads(text)["data"]
    request = JSON.decode(text.encode("utf-8"), True)
    assert isinstance(request, SendToGroup)
    assert request.data == text[span[0] : span[1]].encode("utf-8")


class TestRestBodies:
    """REST send bodies follow the same rule as client frames (one rule for JSON)."""

    @pytest.mark.parametrize(
        "body", [b'{"a":NaN}', b"1e999", b'"\\ud800"', b"[" * 1001 + b"]" * 1001, b'"\xff"']
    )
    def test_refused(self, body: bytes) -> None:
        from webpubsub.core.errors import BadRequest
        from webpubsub.core.message import Message

        with pytest.raises(BadRequest):
            Message.from_rest(body, "application/json")

    def test_relayed_as_sent(self) -> None:
        from webpubsub.core.message import Message

        body = b'{"n":1.10,"n":12345678901234567.5,"deep":' + b"[" * 999 + b"]" * 999 + b"}"
        assert Message.from_rest(body, "application/json").data == body
