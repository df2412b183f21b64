"""An MQTT client (paho-mqtt 2, MQTT 5.0 over WebSocket) publishing to a Web PubSub group.

Topics are groups: the MQTT client subscribes to ``sample-topic``, publishes to it, and a
REST send to the group reaches it too. Needs ``pip install 'paho-mqtt>=2,<3'``::

    export WEBPUBSUB_CONNECTION_STRING="Endpoint=http://127.0.0.1:8080;AccessKey=...;Version=1.0;"
    python samples/mqtt_paho.py
"""

from __future__ import annotations

import queue
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from sample_settings import HUB, connection_string

from webpubsub import WebPubSubServiceClient

TOPIC = "sample-topic"

service = WebPubSubServiceClient.from_connection_string(connection_string(), hub=HUB)
# client_protocol="mqtt": a token and URL for /clients/mqtt/hubs/{hub}
access = service.get_client_access_token(
    client_protocol="mqtt", roles=["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
)
url = urlsplit(access["url"])

events: queue.Queue[str] = queue.Queue()
client = mqtt.Client(
    mqtt.CallbackAPIVersion.VERSION2,
    client_id="samplemqtt1",  # client ids are 1-128 letters and digits
    protocol=mqtt.MQTTv5,
    transport="websockets",
)
client.ws_set_options(path=f"{url.path}?{url.query}")
client.on_connect = lambda c, u, flags, rc, props: events.put(f"connected: {rc}")
client.on_subscribe = lambda c, u, mid, codes, props: events.put("subscribed")
client.on_message = lambda c, u, msg: events.put(f"received on {msg.topic}: {msg.payload!r}")
client.connect(url.hostname or "127.0.0.1", url.port or 80)
client.loop_start()
try:
    print(events.get(timeout=10))
    client.subscribe(TOPIC, qos=1)
    print(events.get(timeout=10))
    client.publish(TOPIC, b"Hello from MQTT!", qos=1)
    print(events.get(timeout=10))
    service.group(TOPIC).send_to_all("Hello from REST!", content_type="text/plain")
    print(events.get(timeout=10))
finally:
    client.disconnect()
    client.loop_stop()
