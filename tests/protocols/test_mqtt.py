"""The MQTT codec: known bytes, stream reassembly, errors with reason codes, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webpubsub.protocols.mqtt import (
    NO_PROPERTIES,
    V5,
    V311,
    ConnAck,
    Connect,
    Disconnect,
    MqttError,
    Packet,
    Parser,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    Reason,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
    encode,
    publish_parts,
)


def parse_one(data: bytes, version: int | None = V5) -> Packet:
    packets = Parser(version).feed(data)
    assert len(packets) == 1
    return packets[0]


def assert_error(data: bytes, reason: Reason, version: int | None = V5) -> None:
    with pytest.raises(MqttError) as info:
        Parser(version).feed(data)
    assert info.value.reason == reason


class TestKnownBytes:
    """Packets written out by hand from MQTT 3.1.1 ch. 3 / MQTT 5.0 ch. 3."""

    def test_connect_311(self) -> None:
        # MQTT, level 4, clean session, keep alive 60, client id "abc"
        data = bytes.fromhex("10 0f 0004 4d515454 04 02 003c 0003 616263")
        assert parse_one(data, None) == Connect("abc", V311, True, 60)

    def test_connect_5_with_properties(self) -> None:
        # level 5, session expiry 30, client id "a", user name "u"
        data = bytes.fromhex("10 16 0004 4d515454 05 82 001e 05 110000001e 0001 61 0001 75")
        packet = parse_one(data, None)
        assert packet == Connect(
            "a", V5, True, 30, "u", properties=Properties(session_expiry_interval=30)
        )

    def test_connack_311_and_5(self) -> None:
        assert encode(ConnAck(0, True), V311) == bytes.fromhex("20 02 01 00")
        props = Properties(retain_available=0)
        assert encode(ConnAck(0, False, props), V5) == bytes.fromhex("20 05 00 00 02 25 00")

    def test_publish_qos1(self) -> None:
        data = bytes.fromhex("32 08 0001 74 0007 00 6869")
        assert parse_one(data) == Publish("t", b"hi", 1, packet_id=7)
        assert encode(Publish("t", b"hi", 1, packet_id=7), V5) == data

    def test_short_acks(self) -> None:
        # 5.0 allows reason code and properties to be left out when the reason is 0
        assert parse_one(bytes.fromhex("40 02 0005")) == PubAck(5)
        assert parse_one(bytes.fromhex("40 03 0005 10")) == PubAck(5, 0x10)
        assert encode(PubRel(9), V5) == bytes.fromhex("62 02 0009")
        assert encode(PubAck(9, 0x87), V311) == bytes.fromhex("40 02 0009")

    def test_disconnect(self) -> None:
        assert parse_one(bytes.fromhex("e0 00")) == Disconnect()
        assert encode(Disconnect(0x8E), V5) == bytes.fromhex("e0 01 8e")
        assert encode(Disconnect(0x8E), V311) == bytes.fromhex("e0 00")

    def test_unsuback_311_has_no_reason_codes(self) -> None:
        assert encode(UnsubAck(3, (0,)), V311) == bytes.fromhex("b0 02 0003")
        assert parse_one(bytes.fromhex("b0 02 0003"), V311) == UnsubAck(3)


class TestStream:
    """MQTT over WebSocket is a byte stream (MQTT 5.0 6.0)."""

    packets: tuple[Packet, ...] = (
        Connect("c1", V5, keep_alive=30),
        Subscribe(1, (Subscription("t", 1),)),
        Publish("t", b"x" * 300, 1, packet_id=2),
        PingReq(),
        Disconnect(),
    )

    def test_one_byte_at_a_time(self) -> None:
        data = b"".join(encode(p, V5) for p in self.packets)
        parser = Parser()
        out: list[Packet] = []
        for i in range(len(data)):
            out += parser.feed(data[i : i + 1])
        assert out == list(self.packets)

    def test_all_in_one_chunk(self) -> None:
        data = b"".join(encode(p, V5) for p in self.packets)
        assert Parser().feed(data) == list(self.packets)

    def test_version_learnt_from_connect(self) -> None:
        parser = Parser()
        parser.feed(encode(Connect("c", V311), V311))
        assert parser.version == V311
        # a 3.1.1 PUBLISH has no property length: bytes after the topic are payload
        assert parser.feed(bytes.fromhex("30 05 0001 74 0000")) == [Publish("t", b"\x00\x00")]


class TestErrors:
    """Bad input raises MqttError with the reason code to answer with."""

    def test_unsupported_level(self) -> None:
        data = bytes.fromhex("10 0f 0004 4d515454 03 02 003c 0003 616263")
        assert_error(data, Reason.UNSUPPORTED_PROTOCOL_VERSION, None)
        mqisdp = bytes.fromhex("10 11 0006 4d514973647070 03 02 003c 0003 616263")
        assert_error(mqisdp, Reason.UNSUPPORTED_PROTOCOL_VERSION, None)

    def test_invalid_utf8_topic(self) -> None:
        assert_error(bytes.fromhex("30 05 0002 c328 00"), Reason.MALFORMED_PACKET)

    def test_nul_in_topic(self) -> None:
        assert_error(bytes.fromhex("30 05 0002 6100 00"), Reason.MALFORMED_PACKET)

    def test_truncated_body(self) -> None:
        # remaining length says 8 but the topic length overruns it
        assert_error(bytes.fromhex("32 04 00ff 7474"), Reason.MALFORMED_PACKET)

    def test_bad_flags(self) -> None:
        assert_error(bytes.fromhex("82 05 0001 0000 00"), Reason.MALFORMED_PACKET)  # SUBSCRIBE
        assert_error(bytes.fromhex("36 05 0001 74 0001"), Reason.MALFORMED_PACKET)  # QoS 3
        assert_error(bytes.fromhex("38 04 0001 74 00"), Reason.MALFORMED_PACKET)  # DUP at QoS 0

    def test_remaining_length_too_long(self) -> None:
        assert_error(bytes.fromhex("30 ff ff ff ff 01"), Reason.MALFORMED_PACKET)

    def test_too_large_refused_before_buffering(self) -> None:
        parser = Parser(V5, max_packet_size=100)
        with pytest.raises(MqttError) as info:
            parser.feed(bytes.fromhex("30 e8 07"))  # 1000 bytes announced, none sent
        assert info.value.reason == Reason.PACKET_TOO_LARGE

    def test_duplicate_property(self) -> None:
        data = bytes.fromhex("30 0c 0001 74 08 03000161 03000162")
        assert_error(data, Reason.PROTOCOL_ERROR)

    def test_unknown_property(self) -> None:
        assert_error(bytes.fromhex("30 06 0001 74 02 7f00"), Reason.MALFORMED_PACKET)

    def test_auth_is_a_protocol_error(self) -> None:
        assert_error(bytes.fromhex("f0 00"), Reason.PROTOCOL_ERROR)

    def test_reserved_type(self) -> None:
        assert_error(bytes.fromhex("00 00"), Reason.MALFORMED_PACKET)

    def test_packets_before_an_error_come_first(self) -> None:
        parser = Parser(V5)
        assert parser.feed(bytes.fromhex("c0 00 00 00")) == [PingReq()]
        with pytest.raises(MqttError) as info:
            parser.feed(b"")
        assert info.value.reason == Reason.MALFORMED_PACKET

    def test_subscribe_without_filters(self) -> None:
        assert_error(bytes.fromhex("82 03 0001 00"), Reason.PROTOCOL_ERROR)


class TestPublishParts:
    """The fan-out encodes once and splices each subscriber's packet id (issue 15 item 8)."""

    def test_parts_splice_to_the_full_encoding(self) -> None:
        packet = Publish("room", b"data", 1, packet_id=1, properties=Properties(content_type="a"))
        head, tail = publish_parts(packet, V5)
        for pid in (1, 77, 65535):
            spliced = head + pid.to_bytes(2, "big") + tail
            assert spliced == encode(
                Publish("room", b"data", 1, packet_id=pid, properties=packet.properties), V5
            )


# -- property-based round trips ------------------------------------------------------------------

text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20
)
blob = st.binary(max_size=40)
pid = st.integers(1, 0xFFFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
byte = st.integers(0, 1)
properties = st.one_of(
    st.just(NO_PROPERTIES),
    st.builds(
        Properties,
        payload_format_indicator=st.none() | byte,
        message_expiry_interval=st.none() | u32,
        content_type=st.none() | text,
        correlation_data=st.none() | blob,
        subscription_identifiers=st.lists(st.integers(1, 268_435_455), max_size=2).map(tuple),
        session_expiry_interval=st.none() | u32,
        receive_maximum=st.none() | st.integers(1, 0xFFFF),
        topic_alias=st.none() | u16,
        reason_string=st.none() | text,
        user_properties=st.lists(st.tuples(text, text), max_size=3).map(tuple),
        maximum_packet_size=st.none() | u32,
    ).filter(lambda p: p != NO_PROPERTIES),
)
qos = st.integers(0, 2)


@st.composite
def publishes(draw: st.DrawFn, props: st.SearchStrategy[Properties]) -> Publish:
    q = draw(qos)
    return Publish(
        draw(text),
        draw(blob),
        q,
        draw(st.booleans()),
        draw(st.booleans()) if q else False,
        draw(pid) if q else None,
        draw(props),
    )


def packets_for(version: int) -> st.SearchStrategy[Packet]:
    props = properties if version == V5 else st.just(NO_PROPERTIES)
    reason = st.integers(0, 255) if version == V5 else st.just(0)
    wills = st.builds(Will, text, blob, qos, st.booleans(), props)
    subscription = st.builds(
        Subscription,
        text,
        qos,
        st.booleans() if version == V5 else st.just(False),
        st.booleans() if version == V5 else st.just(False),
        st.integers(0, 2) if version == V5 else st.just(0),
    )
    return st.one_of(
        st.builds(
            Connect,
            text,
            st.just(version),
            st.booleans(),
            u16,
            st.none() | text,
            st.none() | blob,
            st.none() | wills,
            props,
        ),
        st.builds(ConnAck, st.integers(0, 255), st.booleans(), props),
        publishes(props),
        *(st.builds(cls, pid, reason, props) for cls in (PubAck, PubRec, PubRel, PubComp)),
        st.builds(Subscribe, pid, st.lists(subscription, min_size=1, max_size=3).map(tuple), props),
        st.builds(SubAck, pid, st.lists(st.integers(0, 255), max_size=3).map(tuple), props),
        st.builds(Unsubscribe, pid, st.lists(text, min_size=1, max_size=3).map(tuple), props),
        st.builds(
            UnsubAck,
            pid,
            st.lists(st.integers(0, 255), max_size=3).map(tuple) if version == V5 else st.just(()),
            props,
        ),
        st.just(PingReq()),
        st.just(PingResp()),
        st.builds(Disconnect, reason, props),
    )


@pytest.mark.parametrize("version", [V311, V5])
@given(data=st.data())
def test_round_trip(version: int, data: st.DataObject) -> None:
    packets = data.draw(st.lists(packets_for(version), min_size=1, max_size=4))
    packets = [
        p
        for p in packets
        if not (
            version == V311
            and isinstance(p, Connect)
            and p.password is not None
            and p.username is None
        )
    ]
    stream = b"".join(encode(p, version) for p in packets)
    cut = data.draw(st.integers(0, len(stream)))
    parser = Parser(version)
    assert parser.feed(stream[:cut]) + parser.feed(stream[cut:]) == packets


@given(st.binary(max_size=200))
def test_garbage_never_crashes(data: bytes) -> None:
    """Any bytes either parse or raise MqttError, never anything else."""
    for version in (None, V311, V5):
        try:
            Parser(version, max_packet_size=1000).feed(data)
        except MqttError as exc:
            assert isinstance(exc.reason, Reason)
