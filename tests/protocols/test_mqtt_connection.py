"""MqttConnection without sockets: any packets never raise; a fan-out encodes once."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.protocols.test_mqtt import packets_for
from webpubsub.core import commands as c
from webpubsub.core.message import DataType, Message
from webpubsub.core.node import Node
from webpubsub.protocols.mqtt import (
    NO_PROPERTIES,
    V5,
    V311,
    Connect,
    Packet,
    Properties,
    Publish,
    Subscribe,
    Subscription,
    Unsubscribe,
    encode,
)
from webpubsub.protocols.mqtt.connection import MqttConnection, SharedMqttCodec


class Recording:
    """A transport that keeps what it is given."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed: tuple[int, str] | None = None

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)

    def send_expiring(self, pieces: tuple[bytes, ...], expires: float) -> None:
        self.sent.extend(pieces)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")


@settings(max_examples=200, deadline=None)
@given(
    packets=st.lists(packets_for(V5), max_size=8),
    garbage=st.binary(max_size=30),
    cut=st.integers(0, 10_000),
)
def test_any_packets_after_connect(packets: list[Packet], garbage: bytes, cut: int) -> None:
    node = Node()
    watcher = MqttConnection("h", Recording(), node, roles=ROLES)
    watcher.receive(encode(Connect("watcher", V5), V5), False)
    conn = MqttConnection("h", Recording(), node, roles=ROLES)
    stream = encode(Connect("c1", V5), V5) + b"".join(encode(p, V5) for p in packets) + garbage
    cut = cut % (len(stream) + 1)
    conn.receive(stream[:cut], False, 1.0)
    conn.receive(stream[cut:], False, 2.0)
    conn.socket_lost(conn.transport, 3.0)
    conn.tick(100.0)
    watcher.tick(50.0)  # within its keep alive (60 s x 1.5)
    assert not watcher.closed  # a neighbour is never harmed


def test_receive_maximum_is_announced_and_enforced() -> None:
    """The service's Receive Maximum (5.0 CONNACK) bounds the QoS 2 PUBLISHes a client may
    leave unreleased; one more is DISCONNECT 0x93 (mqtt spec 3.5)."""
    from webpubsub.core.mqtt import RECEIVE_MAXIMUM
    from webpubsub.protocols.mqtt import ConnAck, Disconnect, Parser, Publish, PubRec

    node = Node()
    transport = Recording()
    conn = MqttConnection("h", transport, node, roles=ROLES)
    conn.receive(encode(Connect("c1", V5), V5), False, 1.0)
    stream = b"".join(
        encode(Publish("g", b"x", 2, packet_id=i), V5) for i in range(1, RECEIVE_MAXIMUM + 2)
    )
    conn.receive(stream, False, 2.0)
    parser = Parser(V5)
    answers = [p for frame in transport.sent for p in parser.feed(frame[2:])]
    connack = answers[0]
    assert isinstance(connack, ConnAck)
    assert connack.properties.receive_maximum == RECEIVE_MAXIMUM
    assert sum(isinstance(p, PubRec) for p in answers) == RECEIVE_MAXIMUM
    assert answers[-1] == Disconnect(0x93) and conn.closed


def _subscriber(node: Node, client_id: str, version: int, qos: int) -> Recording:
    transport = Recording()
    conn = MqttConnection("h", transport, node, roles=ROLES)
    subscribe = Subscribe(1, (Subscription("room", qos),))
    conn.receive(encode(Connect(client_id, version), version) + encode(subscribe, version), False)
    transport.sent.clear()  # CONNACK and SUBACK
    return transport


def test_a_fan_out_encodes_a_publish_once_per_version_and_qos() -> None:
    """Issue 15 item 8: MQTT subscribers share one encoding per (version, QoS), and QoS 0
    subscribers are sent the very same bytes object, like simple WebSocket clients."""
    node = Node()
    shapes = [(V311, 0)] * 3 + [(V5, 0)] * 3 + [(V311, 1)] * 2 + [(V5, 1)] * 2
    subscribers = [
        (version, qos, _subscriber(node, f"c{i}", version, qos))
        for i, (version, qos) in enumerate(shapes)
    ]
    message = Message(b"hello", DataType.BINARY)
    node.execute("h", c.Send(c.ToGroup("room"), message))
    # The hub delivers a copy addressed from the group; look at what the subscribers got.
    frames: dict[tuple[int, int], list[bytes]] = {}
    for version, qos, transport in subscribers:
        assert len(transport.sent) == 1
        frames.setdefault((version, qos), []).append(transport.sent[0])
    for (_version, qos), sent in frames.items():
        if qos == 0:
            assert all(frame is sent[0] for frame in sent)  # one object: encoded once
        else:
            # QoS 1: the shared parts around each session's own packet id (1 in each here).
            assert all(frame == sent[0] for frame in sent)
    for qos in (0, 1):
        # 3.1.1 bytes exactly: no properties; the packet id is the subscriber's first.
        packet = Publish("room", b"hello", qos, packet_id=1 if qos else None)
        assert frames[(V311, qos)][0].endswith(encode(packet, V311))


def _session(
    node: Node, client_id: str, subscription: Subscription, props: Properties = NO_PROPERTIES
) -> tuple[MqttConnection, Recording]:
    transport = Recording()
    conn = MqttConnection("h", transport, node, roles=ROLES)
    subscribe = Subscribe(1, (subscription,), props)
    conn.receive(encode(Connect(client_id, V5), V5) + encode(subscribe, V5), False)
    transport.sent.clear()  # CONNACK and SUBACK
    return conn, transport


def test_plain_subscribers_take_the_hub_s_shared_frame_the_others_their_own() -> None:
    """Issue 15 item 8: subscriptions that take a group message as is (QoS 0, no No Local,
    no subscription identifier) are served by Hub.deliver's plain loop, from the frame the
    first one cached under its codec; No Local and subscription identifiers still hold."""
    node = Node()
    plain = [_session(node, f"p{i}", Subscription("room")) for i in range(3)]
    ided, ided_sent = _session(
        node, "ided", Subscription("room"), Properties(subscription_identifiers=(7,))
    )
    publisher, own = _session(node, "pub", Subscription("room", no_local=True))
    assert all(isinstance(conn.codec, SharedMqttCodec) for conn, _ in plain)
    assert not isinstance(ided.codec, SharedMqttCodec)
    assert not isinstance(publisher.codec, SharedMqttCodec)
    publisher.receive(encode(Publish("room", b"hi"), V5), False)
    sent = [transport.sent for _, transport in plain]
    assert all(len(frames) == 1 and frames[0] is sent[0][0] for frames in sent)
    assert sent[0][0].endswith(b"room\x00hi")  # no properties (no content type from MQTT)
    assert len(ided_sent.sent) == 1 and b"\x0b\x07" in ided_sent.sent[0]  # its identifier
    assert own.sent == []  # No Local
    # Without its identified subscription, the connection takes the shared frame too.
    ided.receive(encode(Unsubscribe(2, ("room",)), V5), False)
    assert isinstance(ided.codec, SharedMqttCodec)
