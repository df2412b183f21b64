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


def _client(service: Any, client_id: str, **connect: Any) -> tuple[mqtt.Client, queue.Queue[Any]]:
    api = WebPubSubServiceClient.from_connection_string(service.connection_string, hub="h")
    url = urlsplit(api.get_client_access_token(client_protocol="MQTT")["url"])
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        transport="websockets",
    )
    client.ws_set_options(path=f"{url.path}?{url.query}")
    events: queue.Queue[Any] = queue.Queue()
    client.on_connect = lambda c, u, flags, rc, props: events.put(int(rc.value))
    client.on_disconnect = lambda c, u, flags, rc, props: events.put(("gone", int(rc.value)))
    client.connect(url.hostname or "", url.port or 80, **connect)
    client.loop_start()
    return client, events


def _drop(client: mqtt.Client) -> None:
    sock = client.socket()
    client.loop_stop()
    assert sock is not None
    sock.close()


def test_mqtt_endings_leave_nothing_behind() -> None:
    """Normal end, dropped socket, refusal, takeover and an expired session: no leak."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from .support import Census, assert_no_leaks

    with running() as service:
        baseline = Census.take(service)
        normal, events = _client(service, "n1")
        assert events.get(timeout=TIMEOUT) == 0
        normal.disconnect()
        normal.loop_stop()
        dropped, events = _client(service, "d1")
        assert events.get(timeout=TIMEOUT) == 0
        _drop(dropped)
        refused, events = _client(service, "bad_id")
        assert events.get(timeout=TIMEOUT) == 0x85
        refused.loop_stop()
        first, first_events = _client(service, "same")
        assert first_events.get(timeout=TIMEOUT) == 0
        second, events = _client(service, "same")
        assert events.get(timeout=TIMEOUT) == 0
        assert first_events.get(timeout=TIMEOUT) == ("gone", 0x8E)
        first.loop_stop()
        second.disconnect()
        second.loop_stop()
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 1
        persistent, events = _client(service, "p1", clean_start=False, properties=props)
        assert events.get(timeout=TIMEOUT) == 0
        _drop(persistent)
        assert_no_leaks(service, baseline, timeout=4 * TIMEOUT, fds=False)
        assert service.call(lambda: len(service.service.mqtt_clients)) == 0


def test_shutdown_sends_0x8b() -> None:
    with running() as service:
        client, events = _client(service, "s1")
        assert events.get(timeout=TIMEOUT) == 0
        service.stop()
        try:
            assert events.get(timeout=TIMEOUT) == ("gone", 0x8B)
        finally:
            client.loop_stop()
