"""The Engine.IO v4 codec: payloads, frames, the open packet and its errors."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webpubsub.protocols import engineio

_text_packets = st.builds(
    lambda kind, data: kind + data,
    st.sampled_from(sorted(engineio.TYPES)),
    st.text().filter(lambda s: engineio.SEPARATOR not in s),
)
_binary_packets = st.binary().map(lambda b: base64.b64encode(b).decode())


@given(st.lists(st.one_of(_text_packets, _binary_packets.map(lambda s: "b" + s)), min_size=1))
def test_payload_round_trip(packets: list[str]) -> None:
    assert engineio.split_payload(engineio.join_payload(packets)) == packets


@given(st.binary())
def test_binary_frame_round_trip(data: bytes) -> None:
    packet = engineio.from_frame(data, is_text=False)
    assert engineio.is_binary(packet)
    assert engineio.to_frame(packet) == (True, data)


def test_text_frame_is_the_packet() -> None:
    assert engineio.from_frame(b'42["hi"]', is_text=True) == '42["hi"]'
    assert engineio.to_frame('42["hi"]') == (False, b'42["hi"]')


@pytest.mark.parametrize(
    "body", [b"", b"4a\x1e", b"9x", b"\xff\xfe", b"b!!notbase64", b"40\x1e\x1e2"]
)
def test_bad_payloads_are_errors(body: bytes) -> None:
    with pytest.raises(engineio.EngineIOError):
        engineio.split_payload(body)


def test_binary_packet_in_a_text_frame_is_an_error() -> None:
    with pytest.raises(engineio.EngineIOError):
        engineio.from_frame(b"bAAAA", is_text=True)


def test_open_packet_and_error_body() -> None:
    packet = engineio.open_packet({"sid": "s", "pingInterval": 25000}, ["websocket"])
    assert packet[0] == engineio.OPEN
    assert json.loads(packet[1:]) == {"sid": "s", "pingInterval": 25000, "upgrades": ["websocket"]}
    assert json.loads(engineio.error_body(engineio.UNKNOWN_SID)) == {
        "code": 1,
        "message": "Session ID unknown",
    }


def test_ws_frames_carry_each_packet_in_its_own_frame() -> None:
    frames = engineio.ws_frames(['42["m","é"]', "b" + base64.b64encode(b"\x00\x01").decode()])
    text = '42["m","é"]'.encode()
    assert frames == bytes((0x81, len(text))) + text + bytes((0x82, 2)) + b"\x00\x01"
    assert engineio.ws_frames([]) == b""
