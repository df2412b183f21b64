"""MQTT clients on different nodes of one Redis cluster (issue 15 item 4)."""

from __future__ import annotations

import queue
import time
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .conftest import (
    FAST,
    Cluster,
    Node,
    running_cluster,
)

ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
TIMEOUT = 10.0


def sdk(node: Node, hub: str) -> WebPubSubServiceClient:
    return WebPubSubServiceClient.from_connection_string(
        node.connection_string, hub=hub, retry_total=0
    )


class Client:
    def __init__(self, node: Node, hub: str, client_id: str) -> None:
        token = sdk(node, hub).get_client_access_token(client_protocol="MQTT", roles=ROLES)
        url = urlsplit(token["url"])
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.events: queue.Queue[Any] = queue.Queue()
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            transport="websockets",
        )
        client.ws_set_options(path=f"{url.path}?{url.query}")
        client.on_connect = lambda *a: self.events.put("connected")
        client.on_subscribe = lambda *a: self.events.put("subscribed")
        client.on_message = lambda c, u, msg: self.messages.put(msg)
        client.connect(url.hostname or "", url.port or 80)
        client.loop_start()
        self.client = client
        assert self.events.get(timeout=TIMEOUT) == "connected"

    def subscribe(self, topic: str, qos: int) -> None:
        self.client.subscribe(topic, qos)
        assert self.events.get(timeout=TIMEOUT) == "subscribed"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_mqtt_across_nodes(cluster: Cluster) -> None:
    hub = "mqttcluster"
    a = Client(cluster.nodes[0], hub, "nodeA1")
    b = Client(cluster.nodes[1], hub, "nodeB1")
    try:
        a.subscribe("t", 2)
        b.client.publish("t", b"across", qos=2)
        msg = a.messages.get(timeout=TIMEOUT)
        assert (msg.topic, msg.payload, msg.qos) == ("t", b"across", 2)
        rest = sdk(cluster.nodes[2], hub)
        assert rest.connection_exists("nodeA1")
        rest.send_to_connection("nodeA1", "direct", content_type="text/plain")
        msg = a.messages.get(timeout=TIMEOUT)
        assert (msg.topic, msg.payload) == ("$webpubsub/server/messages", b"direct")
        rest.add_connection_to_group("x", "nodeB1")
        rest.send_to_group("x", "to x", content_type="text/plain")
        assert b.messages.get(timeout=TIMEOUT).payload == b"to x"
    finally:
        a.close()
        b.close()


# -- a session on another node (issue 17: "the same for an MQTT session") ---------------------


class Session:
    """A paho client that keeps its session (clean start 0) and records what happens."""

    def __init__(self, node: Node, hub: str, client_id: str, version: int, clean: bool) -> None:
        token = sdk(node, hub).get_client_access_token(client_protocol="MQTT", roles=ROLES)
        url = urlsplit(token["url"])
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.events: queue.Queue[Any] = queue.Queue()
        self.closed: queue.Queue[Any] = queue.Queue()
        protocol = mqtt.MQTTv5 if version == 5 else mqtt.MQTTv311
        kwargs: dict[str, Any] = {} if version == 5 else {"clean_session": clean}
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            transport="websockets",
            reconnect_on_failure=False,
            **kwargs,
        )
        client.ws_set_options(path=f"{url.path}?{url.query}")
        client.on_connect = lambda c, u, flags, rc, p: self.events.put(
            (rc.value, flags.session_present)
        )
        client.on_subscribe = lambda *a: self.events.put("subscribed")
        client.on_message = lambda c, u, msg: self.messages.put(msg)
        client.on_disconnect = lambda c, u, flags, rc, p: self.closed.put(rc.value)
        connect: dict[str, Any] = {}
        if version == 5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 300
            connect = {"clean_start": clean, "properties": props}
        client.connect(url.hostname or "", url.port or 80, **connect)
        client.loop_start()
        self.client = client
        self.connack = self.events.get(timeout=TIMEOUT)

    def subscribe(self, topic: str, qos: int) -> None:
        self.client.subscribe(topic, qos)
        assert self.events.get(timeout=TIMEOUT) == "subscribed"

    def leave(self) -> None:
        """DISCONNECT (normal): the session stays for its expiry (mqtt spec 3.6)."""
        self.client.disconnect()
        self.closed.get(timeout=TIMEOUT)
        self.client.loop_stop()

    def payloads(self, count: int) -> list[bytes]:
        return [self.messages.get(timeout=TIMEOUT).payload for _ in range(count)]


@pytest.mark.parametrize("version", [5, 4])
def test_session_resumes_on_another_node(cluster: Cluster, version: int) -> None:
    """Subscribed through node 0, away while node 2 sends, back through node 1: Session
    Present, the queued QoS 1 messages in order, the subscription still there."""
    hub, client_id = f"mqttmove{version}", f"mover{version}"
    rest = sdk(cluster.nodes[2], hub)
    first = Session(cluster.nodes[0], hub, client_id, version, clean=False)
    assert first.connack == (0, False)
    first.subscribe("g", 1)
    first.leave()
    for i in range(3):
        rest.send_to_group("g", f"away {i}", content_type="text/plain")
    back = Session(cluster.nodes[1], hub, client_id, version, clean=False)
    try:
        assert back.connack == (0, True)
        assert back.payloads(3) == [b"away 0", b"away 1", b"away 2"]
        other = Client(cluster.nodes[0], hub, f"sender{version}")
        try:
            other.client.publish("g", b"from node 0", qos=1)
            assert back.payloads(1) == [b"from node 0"]
        finally:
            other.close()
        through0 = sdk(cluster.nodes[0], hub)
        assert through0.connection_exists(client_id)
        through0.send_to_connection(client_id, "direct", content_type="text/plain")
        msg = back.messages.get(timeout=TIMEOUT)
        assert (msg.topic, msg.payload) == ("$webpubsub/server/messages", b"direct")
        assert back.messages.empty()
    finally:
        back.client.disconnect()
        back.client.loop_stop()


def test_clean_start_on_another_node_takes_the_session_over(cluster: Cluster) -> None:
    """A live session on node 0, the same client id with clean start through node 1: the
    first socket gets DISCONNECT 0x8E, the new session starts empty and is the one REST
    reaches."""
    hub = "mqtttakeover"
    first = Session(cluster.nodes[0], hub, "twin", 5, clean=False)
    first.subscribe("g", 1)
    second = Session(cluster.nodes[1], hub, "twin", 5, clean=True)
    try:
        assert second.connack == (0, False)
        assert first.closed.get(timeout=TIMEOUT) == 0x8E  # Session taken over
        rest = sdk(cluster.nodes[2], hub)
        rest.send_to_group("g", "old group", content_type="text/plain")  # not subscribed now
        rest.send_to_connection("twin", "to the new one", content_type="text/plain")
        assert second.payloads(1) == [b"to the new one"]
        assert second.messages.empty()
    finally:
        first.client.loop_stop()
        second.client.disconnect()
        second.client.loop_stop()


def test_live_session_moves_while_messages_flow(cluster: Cluster) -> None:
    """QoS 1 messages sent through node 2 the whole time a live session moves from node 0 to
    node 1 (resumed while still attached): every message arrives, in order (QoS 1 may repeat
    one that was in flight, flagged DUP)."""
    hub = "mqttflow"
    rest = sdk(cluster.nodes[2], hub)
    first = Session(cluster.nodes[0], hub, "flow", 5, clean=False)
    first.subscribe("g", 1)
    sent = 0
    for _ in range(50):
        rest.send_to_group("g", str(sent), content_type="text/plain")
        sent += 1
    second = Session(cluster.nodes[1], hub, "flow", 5, clean=False)
    try:
        assert second.connack == (0, True)
        for _ in range(50):
            rest.send_to_group("g", str(sent), content_type="text/plain")
            sent += 1
        seen: list[int] = []
        for got in (first.messages, second.messages):
            while True:
                try:
                    msg = got.get(timeout=0 if got is first.messages else TIMEOUT)
                except queue.Empty:
                    break
                n = int(msg.payload)
                if n in seen:
                    assert msg.dup, f"{n} repeated without DUP"
                    continue
                seen.append(n)
                if got is second.messages and len(seen) == sent:
                    break
        assert seen == list(range(sent))
    finally:
        first.client.loop_stop()
        second.client.disconnect()
        second.client.loop_stop()


def test_the_holder_killed_means_a_new_session() -> None:
    """kill -9 of the node holding a session: it is lost with that node's memory; a CONNECT
    through another node gets 0x88 (Server unavailable, the client retries) while the dead
    node's heartbeat lasts, then a new session, never a hang."""
    with running_cluster(FAST, 2) as running:
        a, b = running.nodes
        first = Session(a, "orphans", "lost", 5, clean=False)
        first.subscribe("g", 1)
        first.leave()
        a.kill()
        answers = []
        deadline = time.monotonic() + 20
        while not answers or answers[-1] != (0, False):
            assert time.monotonic() < deadline, f"no new session: {answers}"
            again = Session(b, "orphans", "lost", 5, clean=False)
            answers.append(again.connack)
            again.client.loop_stop()
        assert set(answers) <= {(0x88, False), (0, False)}
        assert sdk(b, "orphans").connection_exists("lost")
