"""WebSocket fuzzing: random and mutated frames and messages against a running service.

Every example opens a real connection, sends what ``hypothesis`` drew, then a probe (a JSON
``ping``) and a clean close, and reads to the end. An oracle written from RFC 6455 5.2-5.5
and the protocol spec (4.3, 4.8, 4.10, 6) says how the service must answer: the close code
it must send, or that the connection must survive and answer the probe. After every example
the service must be back where it started: no TCP connection, hub entry, task or file
descriptor left behind.

The run is bounded (``FUZZ_EXAMPLES`` per test, deterministic in CI).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tests.hardening.support import (
    BINARY,
    CLOSE,
    CONT,
    JOIN,
    PING,
    PONG,
    SEND,
    TEXT,
    Census,
    RawWebSocket,
    assert_no_leaks,
    close_payload,
    frame,
    running,
)
from webpubsub.protocols.proto.webpubsub_pb2 import (
    DownstreamMessage,
    MessageData,
    UpstreamMessage,
)
from webpubsub.testing import ServiceThread

MAX_MESSAGE = 4096  # a small limit keeps oversize examples cheap
HUB = "fuzz"
JSON_PROTOCOL = "json.webpubsub.azure.v1"
PROTOBUF_PROTOCOL = "protobuf.webpubsub.azure.v1"
PROBE = b'{"type":"ping"}'
PROTOBUF_PING = UpstreamMessage(ping_message=UpstreamMessage.PingMessage()).SerializeToString()
PROTOBUF_PONG = DownstreamMessage(pong_message=DownstreamMessage.PongMessage()).SerializeToString()
RESERVED_OPCODES = [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]
VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014]
PROTOCOL_ERROR, INVALID_DATA, POLICY, TOO_BIG, UNSUPPORTED = 1002, 1007, 1008, 1009, 1003

fuzz = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")),
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceThread]:
    with running(max_message_size=MAX_MESSAGE, close_timeout=1.0) as svc:
        yield svc


@pytest.fixture(scope="module")
def baseline(service: ServiceThread) -> Census:
    return Census.take(service)


def open_json(service: ServiceThread) -> RawWebSocket:
    ws = RawWebSocket(service, HUB, subprotocol=JSON_PROTOCOL, roles=[JOIN, SEND])
    greeting = ws.next_data()
    assert greeting is not None and b'"connected"' in greeting.payload
    return ws


def finish(
    ws: RawWebSocket, probe: bytes = frame(TEXT, PROBE), pong: bytes = b'{"type":"pong"}'
) -> tuple[int | None, list[bytes]]:
    """Send ``probe`` (a ping of the subprotocol) and read until its ``pong`` or the service's
    close; after the pong, close cleanly. Waiting for the answer before closing keeps our
    own close frame from racing the service's. Returns (close code, data payloads)."""
    ws.send(probe)
    payloads: list[bytes] = []
    while (received := ws.next_data()) is not None and received.opcode != CLOSE:
        payloads.append(received.payload)
        if received.payload == pong:
            ws.send(frame(CLOSE, close_payload(1000)))
            break
    code = received.close_code if received is not None else None
    ws.shutdown()
    final, frames = ws.until_closed()
    ws.close()
    payloads += [f.payload for f in frames if f.opcode in (TEXT, BINARY)]
    return (code if code is not None else final), payloads


def assert_outcome(code: int | None, payloads: list[bytes], expected: set[int] | None) -> None:
    """``expected`` None: the connection survived, so the probe was answered and our close
    echoed; otherwise the service closed with one of ``expected``."""
    if expected is None:
        assert b'{"type":"pong"}' in payloads, payloads
        assert code == 1000, code
    else:
        assert code in expected, (code, expected, payloads[-3:])


# -- the oracle ---------------------------------------------------------------------------


def expected_for_message(data: bytes, is_text: bool) -> set[int] | None:
    """A complete message on the JSON subprotocol (spec 4.3, 4.10, compatibility.md)."""
    if len(data) > MAX_MESSAGE:
        return {TOO_BIG}
    if is_text:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return {INVALID_DATA}
    try:
        envelope = json.loads(data)
    except ValueError:
        return {POLICY}
    if not isinstance(envelope, dict) or not isinstance(envelope.get("type"), str):
        return {POLICY}
    # A message with a valid type may still be refused for a bad ackId or sequenceId.
    return {POLICY, -1}  # -1: "or it survives"


def expected_for_frame(
    opcode: int, fin: bool, rsv: int, mask: bool, payload: bytes
) -> set[int] | None:
    """One frame after the handshake (RFC 6455 5.2-5.5); None: the connection survives."""
    if rsv or not mask or opcode in RESERVED_OPCODES:
        return {PROTOCOL_ERROR}
    if opcode >= 0x8:
        if not fin or len(payload) > 125:
            return {PROTOCOL_ERROR}
        if opcode != CLOSE:
            return None  # ping or unsolicited pong
        if len(payload) == 1:
            return {PROTOCOL_ERROR}
        if not payload:
            return {1005}  # an empty close is echoed empty
        code = struct.unpack("!H", payload[:2])[0]
        problems = set()
        if code not in VALID_CLOSE_CODES and not 3000 <= code < 5000:
            problems.add(PROTOCOL_ERROR)
        try:
            payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            problems.add(INVALID_DATA)  # with a bad code too, either may be reported
        return problems or {code}  # a valid close is echoed
    if opcode == CONT:
        return {PROTOCOL_ERROR}  # no message to continue
    return expected_for_message(payload, opcode == TEXT)


def survives(expected: set[int] | None) -> bool:
    return expected is None or -1 in expected


# -- strategies ---------------------------------------------------------------------------

opcodes = st.sampled_from([CONT, TEXT, BINARY, CLOSE, PING, PONG, *RESERVED_OPCODES])
payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=100).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.integers(0, 5000).map(lambda code: struct.pack("!H", code)),
    st.just(PROBE),
    st.just(b'{"type":"joinGroup","group":"g","ackId":1}'),
)


# -- frames ---------------------------------------------------------------------------------


@fuzz
@given(
    opcode=opcodes,
    fin=st.booleans(),
    rsv=st.sampled_from([0, 0, 0, 1, 2, 4, 7]),
    mask=st.sampled_from([True, True, True, False]),
    payload=payloads,
    length_size=st.sampled_from([None, None, 2, 8]),
)
def test_one_frame(
    service: ServiceThread,
    baseline: Census,
    opcode: int,
    fin: bool,
    rsv: int,
    mask: bool,
    payload: bytes,
    length_size: int | None,
) -> None:
    """Bad opcodes, RSV bits, unmasked frames, fragmented or long control frames, invalid
    close codes and reasons, invalid UTF-8, non-minimal lengths: each has its close code."""
    if length_size == 2 and len(payload) > 65535:
        length_size = None
    note(f"frame opcode={opcode} fin={fin} rsv={rsv} mask={mask} payload={payload!r}")
    expected = expected_for_frame(opcode, fin, rsv, mask, payload)
    continues = (
        opcode in (TEXT, BINARY)
        and not fin
        and expected == expected_for_message(payload, opcode == TEXT)
    )
    ws = open_json(service)
    ws.send(frame(opcode, payload, fin=fin, rsv=rsv, mask=mask, length_size=length_size))
    if continues and not rsv and mask:
        ws.send(frame(CONT, b"", fin=True))  # complete the message we started
    code, received = finish(ws)
    if survives(expected):
        assert code in (expected or set()) | {1000}, (code, expected)
        if code == 1000:
            assert b'{"type":"pong"}' in received
    else:
        assert_outcome(code, received, expected)
    assert_no_leaks(service, baseline)


@fuzz
@given(announced=st.integers(MAX_MESSAGE + 1, 2**63 - 1), opcode=st.sampled_from([TEXT, BINARY]))
def test_oversize_frame_is_refused_from_its_header(
    service: ServiceThread, baseline: Census, announced: int, opcode: int
) -> None:
    """A frame announcing more than the limit is refused with 1009 before its payload."""
    ws = open_json(service)
    ws.send(frame(opcode, b"", length=announced, length_size=8))
    ws.shutdown()
    code, _ = ws.until_closed()
    ws.close()
    assert code == TOO_BIG
    assert_no_leaks(service, baseline)


@fuzz
@given(data=st.binary(min_size=1, max_size=2000))
def test_random_bytes_after_the_handshake(
    service: ServiceThread, baseline: Census, data: bytes
) -> None:
    """Whatever arrives, the service ends the connection (it got EOF) with a legal close
    code or none, and sends nothing but well-formed frames."""
    ws = open_json(service)
    ws.send(data)
    ws.shutdown()
    code, frames = ws.until_closed()
    ws.close()
    legal = {None, 1005, *VALID_CLOSE_CODES, *range(3000, 5000)}  # None: EOF, no frame
    assert code in legal, code
    assert all(f.opcode in (TEXT, PONG) for f in frames), frames
    assert_no_leaks(service, baseline)


@fuzz
@given(
    parts=st.lists(st.binary(max_size=200), min_size=1, max_size=6),
    interleave=st.lists(st.sampled_from(["none", "ping", "ping_unfinished", "text"]), max_size=6),
    is_text=st.booleans(),
)
def test_fragmented_messages(
    service: ServiceThread,
    baseline: Census,
    parts: list[bytes],
    interleave: list[str],
    is_text: bool,
) -> None:
    """Fragments with control frames between them (allowed), a fragmented control frame
    (1002) or a new message before the last fragment (1002); the joined message counts."""
    ws = open_json(service)
    expected: set[int] | None = None
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        ws.send(frame((TEXT if is_text else BINARY) if i == 0 else CONT, part, fin=last))
        between = interleave[i] if i < len(interleave) else "none"
        if last or between == "none":
            continue
        if between == "ping":
            ws.send(frame(PING, b"p"))
        elif between == "ping_unfinished":
            ws.send(frame(PING, b"p", fin=False))
            expected = {PROTOCOL_ERROR}
            break
        else:
            ws.send(frame(TEXT, PROBE))
            expected = {PROTOCOL_ERROR}
            break
    else:
        expected = expected_for_message(b"".join(parts), is_text)
    code, received = finish(ws)
    if survives(expected):
        assert code in (expected or set()) | {1000}, (code, expected)
    else:
        assert_outcome(code, received, expected)
    assert_no_leaks(service, baseline)


# -- JSON messages --------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
TYPES = ["joinGroup", "leaveGroup", "sendToGroup", "event", "ping", "sequenceAck", "invoke", "x"]
FIELDS = ["group", "ackId", "dataType", "data", "noEcho", "event", "sequenceId", "stream"]
envelopes = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | json_values},
    optional={name: json_values | st.integers(-(2**70), 2**70) for name in FIELDS},
)


def check_replies(payloads: list[bytes]) -> None:
    for payload in payloads:
        reply = json.loads(payload)
        assert reply["type"] in ("ack", "message", "pong", "system"), reply
        if reply["type"] == "ack" and not reply["success"]:
            assert reply["error"]["name"] and reply["error"]["message"], reply


@fuzz
@given(message=json_values | envelopes)
def test_random_json_messages(service: ServiceThread, baseline: Census, message: object) -> None:
    """Random JSON and mutated envelopes: an ack (success or a named error), silence, or a
    close with 1008; never another code, never a crash."""
    data = json.dumps(message).encode()
    ws = open_json(service)
    ws.send(frame(TEXT, data))
    code, received = finish(ws)
    expected = expected_for_message(data, True)
    assert code in (expected or set()) | {1000}, (code, message)
    check_replies(received)
    assert_no_leaks(service, baseline)


# -- protobuf messages ----------------------------------------------------------------------


def upstream_messages() -> st.SearchStrategy[bytes]:
    def build(kind: str, group: str, ack: int, text: str) -> bytes:
        message = UpstreamMessage()
        if kind == "join":
            message.join_group_message.group = group
            message.join_group_message.ack_id = ack
        elif kind == "send":
            message.send_to_group_message.group = group
            message.send_to_group_message.ack_id = ack
            message.send_to_group_message.data.CopyFrom(MessageData(text_data=text))
        elif kind == "event":
            message.event_message.event = group
            message.event_message.data.CopyFrom(MessageData(json_data=text))
        else:
            message.ping_message.SetInParent()
        return message.SerializeToString()

    valid = st.builds(
        build,
        st.sampled_from(["join", "send", "event", "ping"]),
        st.text(max_size=20),
        st.integers(0, 2**64 - 1),
        st.text(max_size=20),
    )

    def mutate(data: bytes, position: int, byte: int, cut: int) -> bytes:
        if not data:
            return bytes([byte])
        position %= len(data)
        mutated = data[:position] + bytes([byte]) + data[position + 1 :]
        return mutated[: max(1, len(mutated) - cut)]

    mutated = st.builds(mutate, valid, st.integers(0, 100), st.integers(0, 255), st.integers(0, 5))
    return valid | mutated | st.binary(max_size=300)


@fuzz
@given(data=upstream_messages(), as_text=st.booleans())
def test_protobuf_messages(
    service: ServiceThread, baseline: Census, data: bytes, as_text: bool
) -> None:
    """Valid, mutated and random ``UpstreamMessage`` bytes: answered, ignored, or closed
    with 1008 (1003 for a text frame, 1007 for a text frame that is not UTF-8)."""
    ws = RawWebSocket(service, HUB, subprotocol=PROTOBUF_PROTOCOL, roles=[JOIN, SEND])
    assert ws.next_data() is not None  # connected
    ws.send(frame(TEXT if as_text else BINARY, data))
    code, _ = finish(ws, frame(BINARY, PROTOBUF_PING), PROTOBUF_PONG)
    if as_text:
        try:
            data.decode("utf-8")
            allowed = {UNSUPPORTED}
        except UnicodeDecodeError:
            allowed = {INVALID_DATA}
    else:
        allowed = {1000, POLICY}
    assert code in allowed, (code, data)
    assert_no_leaks(service, baseline)
