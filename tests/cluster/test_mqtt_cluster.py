"""MQTT clients on different nodes of one Redis cluster (issue 15 item 4)."""

from __future__ import annotations

import queue
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from paho.mqtt.enums import CallbackAPIVersion

from .conftest import Cluster, Node

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
