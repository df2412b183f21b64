"""The MQTT codec against a real paho-mqtt 2 client over a TCP socket (both directions).

A tiny in-test broker reads paho's bytes with ``Parser`` and answers with ``encode``; paho
must accept every answer (its callbacks fire) and we must read every packet it writes.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from webpubsub.protocols.mqtt import (
    V5,
    V311,
    ConnAck,
    Connect,
    Disconnect,
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
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    encode,
)

WAIT = 10.0


class EchoBroker:
    """Accepts one client; records its packets and answers like a broker that echoes PUBLISH."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: list[Packet] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.listener.settimeout(WAIT)
        sock, _ = self.listener.accept()
        sock.settimeout(WAIT)
        parser = Parser()
        with sock:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                for packet in parser.feed(data):
                    self.received.append(packet)
                    version = parser.version or V5
                    for answer in self._answer(packet, version):
                        sock.sendall(encode(answer, version))
                    if isinstance(packet, Disconnect):
                        self.done.set()
                        return
        self.done.set()

    def _answer(self, packet: Packet, version: int) -> list[Packet]:
        if isinstance(packet, Connect):
            props = (
                Properties(assigned_client_identifier="assigned1") if not packet.client_id else None
            )
            return [ConnAck(0, False, props or ConnAck().properties)]
        if isinstance(packet, Subscribe):
            return [SubAck(packet.packet_id, tuple(s.qos for s in packet.subscriptions))]
        if isinstance(packet, Unsubscribe):
            return [UnsubAck(packet.packet_id, (0,) * len(packet.topic_filters))]
        if isinstance(packet, Publish):
            echo = Publish(
                packet.topic,
                packet.payload,
                packet.qos,
                packet_id=packet.packet_id,
                properties=packet.properties,
            )
            if packet.qos == 1:
                return [PubAck(packet.packet_id or 0), echo]
            if packet.qos == 2:
                return [PubRec(packet.packet_id or 0)]
            return [echo]
        if isinstance(packet, PubRel):
            return [PubComp(packet.packet_id)]
        if isinstance(packet, PubRec):
            return [PubRel(packet.packet_id)]
        if isinstance(packet, PingReq):
            return [PingResp()]
        return []


@pytest.fixture
def broker() -> Iterator[EchoBroker]:
    b = EchoBroker()
    yield b
    b.listener.close()


@pytest.mark.parametrize("protocol", ["v311", "v5"])
def test_paho_session(broker: EchoBroker, protocol: str) -> None:
    version = mqtt.MQTTv311 if protocol == "v311" else mqtt.MQTTv5
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="paho1", protocol=version)
    client.username_pw_set("user", "pw")
    client.will_set("will/t", b"gone", qos=1)
    connected, subscribed, got, published = (threading.Event() for _ in range(4))
    messages: list[tuple[str, bytes, int]] = []

    def on_message(c: object, u: object, msg: object) -> None:
        messages.append((msg.topic, msg.payload, msg.qos))  # type: ignore[attr-defined]
        if len(messages) == 2:
            got.set()

    client.on_connect = lambda *a: connected.set()
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = on_message
    client.on_publish = lambda *a: published.set()
    client.connect("127.0.0.1", broker.port, keepalive=30)
    client.loop_start()
    try:
        assert connected.wait(WAIT)
        client.subscribe([("t", 1), ("u", 2)])
        assert subscribed.wait(WAIT)
        props = None
        if version == mqtt.MQTTv5:
            props = PahoProperties(PacketTypes.PUBLISH)
            props.ContentType = "text/plain"
            props.UserProperty = [("k", "v")]
        client.publish("t", b"one", qos=1, properties=props)
        client.publish("t", b"two", qos=0)
        info = client.publish("t", b"three", qos=2)
        assert got.wait(WAIT)
        info.wait_for_publish(WAIT)
        client.unsubscribe("u")
        client.disconnect()
        assert broker.done.wait(WAIT)
    finally:
        client.loop_stop()
    assert ("t", b"one", 1) in messages and ("t", b"two", 0) in messages

    level = V311 if protocol == "v311" else V5
    kinds = [type(p).__name__ for p in broker.received]
    assert kinds[0] == "Connect" and kinds[-1] == "Disconnect"
    assert {"Subscribe", "Publish", "Unsubscribe"} <= set(kinds)
    connect = broker.received[0]
    assert isinstance(connect, Connect)
    assert (connect.client_id, connect.protocol_level, connect.keep_alive) == ("paho1", level, 30)
    assert (connect.username, connect.password) == ("user", b"pw")
    assert connect.will is not None and (connect.will.topic, connect.will.payload) == (
        "will/t",
        b"gone",
    )
    pubs = [p for p in broker.received if isinstance(p, Publish)]
    assert [(p.payload, p.qos) for p in pubs] == [(b"one", 1), (b"two", 0), (b"three", 2)]
    if level == V5:
        assert pubs[0].properties.content_type == "text/plain"
        assert pubs[0].properties.user_properties == (("k", "v"),)
    sub = next(p for p in broker.received if isinstance(p, Subscribe))
    assert [(s.topic_filter, s.qos) for s in sub.subscriptions] == [("t", 1), ("u", 2)]
