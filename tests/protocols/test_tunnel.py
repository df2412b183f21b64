"""The tunnel codec (socketio spec 4.2): frames of the official SDK, round trips, bad input."""

from __future__ import annotations

import contextlib
import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webpubsub.core.errors import ProtocolViolation
from webpubsub.protocols import tunnel as t

# Built by the SDK itself (@azure/web-pubsub-socket.io 1.2.1, its TunnelMessageProtocol over
# @msgpack/msgpack): TunnelHttpRequestMessage(3, true, "", "POST", url,
# {"Content-Type": ["text/plain"]}, '42["hello","world"]').
SDK_REQUEST = bytes.fromhex(
    "de0000009301d9c57b2241636b4964223a332c224c6f63616c526f7574696e67223a747275652c224368616e"
    "6e656c4e616d65223a22222c22487474704d6574686f64223a22504f5354222c2255726c223a226874747073"
    "3a2f2f686f73742f6170692f687562732f68312f636f6e6e656374696f6e732f6162632f3a73656e643f6170"
    "692d76657273696f6e3d323032332d30372d3031222c2248656164657273223a7b22436f6e74656e742d5479"
    "7065223a5b22746578742f706c61696e225d7d2c2254797065223a317dc41334325b2268656c6c6f222c2277"
    "6f726c64225d"
)
# TunnelHttpResponseMessage(7, false, 200, "", false, {"content-type": [...]}, body).
SDK_RESPONSE = bytes.fromhex(
    "bd0000009302d99f7b2241636b4964223a372c224c6f63616c526f7574696e67223a66616c73652c22537461"
    "747573436f6465223a3230302c224368616e6e656c4e616d65223a22222c224e6f74436f6d706c6574656422"
    "3a66616c73652c2248656164657273223a7b22636f6e74656e742d74797065223a5b226170706c6963617469"
    "6f6e2f6a736f6e3b20636861727365743d7574662d38225d7d2c2254797065223a327dc4187b22736f636b65"
    "74696f223a7b22736964223a2278227d7d"
)


class TestSdkFrames:
    """Frames exactly as @msgpack/msgpack encodes them."""

    def test_request(self) -> None:
        message = t.decode(SDK_REQUEST)
        assert message == t.HttpRequest(
            3,
            "POST",
            "https://host/api/hubs/h1/connections/abc/:send?api-version=2023-07-01",
            {"Content-Type": ["text/plain"]},
            b'42["hello","world"]',
            local_routing=True,
        )

    def test_response(self) -> None:
        message = t.decode(SDK_RESPONSE)
        assert message == t.HttpResponse(
            7,
            200,
            {"content-type": ["application/json; charset=utf-8"]},
            b'{"socketio":{"sid":"x"}}',
        )

    def test_our_encoding_is_the_sdks(self) -> None:
        """Same field order, same MessagePack choices: byte for byte what the SDK writes."""
        message = t.decode(SDK_REQUEST)
        assert t.encode(message) == SDK_REQUEST
        assert t.encode(t.decode(SDK_RESPONSE)) == SDK_RESPONSE


class TestServiceMessages:
    @pytest.mark.parametrize(
        "message",
        [t.ServiceStatus("Ping"), t.ConnectionClose("bye"), t.ConnectionConnected("c", "u", "r")],
    )
    def test_round_trip(self, message: t.Message) -> None:
        assert t.decode(t.encode(message)) == message

    def test_connection_connected(self) -> None:
        data = t.encode(t.ConnectionConnected("c1", "sub-1"))
        (length,) = struct.unpack_from("<I", data)
        assert length == len(data) - 4
        assert data[4:6] == b"\x93\x0a"
        text = data[8 : 8 + data[7]].decode() if data[6] == 0xD9 else data[7 : 7 + (data[6] & 31)]
        fields = json.loads(text)
        assert fields == {
            "ConnectionId": "c1",
            "UserId": "sub-1",
            "ReconnectionToken": "",
            "Type": 10,
        }
        assert data.endswith(b"\xc0")  # no content: nil

    @pytest.mark.parametrize("size", [0, 255, 256, 65535, 65536, 70000])
    def test_body_sizes(self, size: int) -> None:
        """bin8, bin16 and bin32 (the SDK's 70000-byte body starts ``ea110100 9301``)."""
        message = t.HttpRequest(1, "POST", "https://host/x", {}, b"A" * size)
        assert t.decode(t.encode(message)) == message

    @given(
        st.integers(0, 2**53 - 1),
        st.integers(100, 599),
        st.dictionaries(st.text(min_size=1), st.lists(st.text()), max_size=4),
        st.binary(max_size=300),
        st.booleans(),
        st.text(max_size=300),
    )
    def test_response_round_trip(
        self,
        ack_id: int,
        status: int,
        headers: dict[str, list[str]],
        content: bytes,
        not_completed: bool,
        channel: str,
    ) -> None:
        message = t.HttpResponse(ack_id, status, headers, content, not_completed, False, channel)
        assert t.decode(t.encode(message)) == message


def _frame(payload: bytes) -> bytes:
    return struct.pack("<I", len(payload)) + payload


def _msg(kind: bytes, text: bytes, content: bytes) -> bytes:
    return _frame(b"\x93" + kind + bytes((0xD9, len(text))) + text + content)


GOOD_JSON = b'{"AckId":1,"HttpMethod":"GET","Url":"https://host/"}'


class TestBadInput:
    """Every malformed frame is a ProtocolViolation naming the close code, never a crash."""

    @pytest.mark.parametrize(
        ("data", "words"),
        [
            (b"", "shorter"),
            (b"\x01\x00", "shorter"),
            (struct.pack("<I", 10) + b"\x93", "declares"),
            (_frame(b"\x92\x01\xa0"), "array of 3"),
            (_frame(b"\x81\x01\x01"), "array of 3"),
            (_frame(b"\x93\xa1x\xa0\xc0"), "integer"),
            (_frame(b"\x93\x01\x01\xc0"), "string"),
            (_frame(b"\x93\x01\xa2{}\xa0"), "binary or nil"),
            (_frame(b"\x93\x01\xa2{}\xc0\xc0"), "after"),
            (_frame(b"\x93\x01\xd9\xff{}"), "ends inside"),
            (_frame(b"\x93\x01\xa2\xff\xfe\xc0"), "UTF-8"),
            (_msg(b"\x01", b"[1,2]", b"\xc0"), "object"),
            (_msg(b"\x01", b"{nope", b"\xc0"), "valid JSON"),
            (_msg(b"\x63", GOOD_JSON, b"\xc0"), "type 99"),
            (_msg(b"\x0a", b'{"ConnectionId":1}', b"\xc0"), "ConnectionId"),
            (_msg(b"\x01", b'{"AckId":-1,"HttpMethod":"GET","Url":""}', b"\xc0"), "AckId"),
            (_msg(b"\x01", b'{"AckId":true,"HttpMethod":"GET","Url":""}', b"\xc0"), "AckId"),
            (_msg(b"\x01", b'{"AckId":1,"Url":""}', b"\xc0"), "HttpMethod"),
            (
                _msg(b"\x01", b'{"AckId":1,"HttpMethod":"GET","Url":"","Headers":[]}', b"\xc0"),
                "Headers",
            ),
            (
                _msg(
                    b"\x01", b'{"AckId":1,"HttpMethod":"GET","Url":"","Headers":{"a":[1]}}', b"\xc0"
                ),
                "array of strings",
            ),
            (_msg(b"\x02", b'{"AckId":1}', b"\xc0"), "StatusCode"),
        ],
    )
    def test_refused(self, data: bytes, words: str) -> None:
        with pytest.raises(ProtocolViolation, match=words) as info:
            t.decode(data)
        assert info.value.code == t.CloseCode.POLICY_VIOLATION

    def test_good_json_is_accepted(self) -> None:
        assert isinstance(t.decode(_msg(b"\x01", GOOD_JSON, b"\xc0")), t.HttpRequest)

    def test_text_frame(self) -> None:
        with pytest.raises(ProtocolViolation) as info:
            t.decode(SDK_REQUEST, is_text=True)
        assert info.value.code == t.CloseCode.UNSUPPORTED_DATA

    def test_too_big(self) -> None:
        with pytest.raises(ProtocolViolation) as info:
            t.decode(SDK_REQUEST, max_size=100)
        assert info.value.code == t.CloseCode.MESSAGE_TOO_BIG

    def test_huge_declared_sizes_read_nothing(self) -> None:
        """A bin32 claiming 4 GB inside a small frame fails at once, allocating nothing."""
        with pytest.raises(ProtocolViolation, match="ends inside"):
            t.decode(_msg(b"\x01", GOOD_JSON, b"\xc6\xff\xff\xff\xff"))

    @given(st.binary(max_size=200))
    def test_fuzz(self, data: bytes) -> None:
        with contextlib.suppress(ProtocolViolation):
            t.decode(data)
