"""MqttConnection without sockets: any packets, in any order and split, never raise."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.protocols.test_mqtt import packets_for
from webpubsub.core.node import Node
from webpubsub.protocols.mqtt import V5, Connect, Packet, encode
from webpubsub.protocols.mqtt.connection import MqttConnection


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
