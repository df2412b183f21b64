"""MQTT clients under the service's limits: the message rate (issue 15, mqtt spec 6.1)."""

from __future__ import annotations

import queue
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from paho.mqtt.enums import CallbackAPIVersion

from .support import running

TIMEOUT = 5.0


def test_mqtt_publish_rate() -> None:
    """Over the rate a QoS 1 PUBLISH gets PUBACK 0x97; ignoring it ends with 0x96."""
    with running(client_message_rate=1, client_message_burst=3) as service:
        api = WebPubSubServiceClient.from_connection_string(service.connection_string, hub="h")
        token = api.get_client_access_token(client_protocol="MQTT", roles=["webpubsub.sendToGroup"])
        url = urlsplit(token["url"])
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id="rate1",
            protocol=mqtt.MQTTv5,
            transport="websockets",
        )
        client.ws_set_options(path=f"{url.path}?{url.query}")
        events: queue.Queue[Any] = queue.Queue()
        client.on_connect = lambda *a: events.put("connected")
        client.on_publish = lambda c, u, mid, rc, props: events.put(int(rc.value))
        client.on_disconnect = lambda c, u, flags, rc, props: events.put(("gone", int(rc.value)))
        client.connect(url.hostname or "", url.port or 80)
        client.loop_start()
        try:
            assert events.get(timeout=TIMEOUT) == "connected"
            for _ in range(5):
                client.publish("t", b"x", qos=1)
            codes = [events.get(timeout=TIMEOUT) for _ in range(5)]
            assert codes.count(0) == 3 and codes.count(0x97) == 2, codes
            for _ in range(10):
                client.publish("t", b"x", qos=0)
            while (event := events.get(timeout=TIMEOUT)) != ("gone", 0x96):
                assert isinstance(event, int), event
        finally:
            client.loop_stop()
