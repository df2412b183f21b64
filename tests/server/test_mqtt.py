"""MQTT clients at /clients/mqtt/hubs/{hub} (mqtt spec), driven by a real paho-mqtt 2 client.

Tokens come from the official Python server SDK (``client_protocol="MQTT"``), REST calls go
through it too, and the JSON side of interop is the ``json.webpubsub.azure.v1`` test client.
"""

from __future__ import annotations

import json
import queue
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import paho.mqtt.client as mqtt
import pytest
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.reasoncodes import ReasonCode

from tests.conftest import ACCESS_KEY
from tests.server.helpers import TIMEOUT, connect_json, wait_until
from tests.upstream_app import Reply, UpstreamApp
from webpubsub.auth.tokens import mint_client_token
from webpubsub.core.events import EventHandlerSettings, HubSettings
from webpubsub.protocols.frames import binary_frame, text_frame
from webpubsub.protocols.mqtt import Parser, PingResp, Publish, SubAck
from webpubsub.testing import ServiceThread

V311, V5 = mqtt.MQTTv311, mqtt.MQTTv5


def sdk(service: ServiceThread, hub: str) -> WebPubSubServiceClient:
    return WebPubSubServiceClient.from_connection_string(service.connection_string, hub=hub)


@dataclass
class Paho:
    """A paho client over WebSocket with its callbacks turned into queues."""

    client: mqtt.Client
    connack: queue.Queue[Any] = field(default_factory=queue.Queue)
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    subacks: queue.Queue[list[ReasonCode]] = field(default_factory=queue.Queue)
    pubacks: queue.Queue[tuple[int, Any]] = field(default_factory=queue.Queue)
    disconnects: queue.Queue[Any] = field(default_factory=queue.Queue)
    connack_properties: Any = None

    def subscribe(self, topic: str, qos: int = 0) -> list[int]:
        self.client.subscribe(topic, qos)
        return [int(getattr(c, "value", c)) for c in self.subacks.get(timeout=TIMEOUT)]

    def message(self) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=TIMEOUT)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def paho(
    service: ServiceThread,
    hub: str,
    client_id: str,
    *,
    version: int = V5,
    roles: list[str] | None = None,
    user_id: str | None = None,
    groups: list[str] | None = None,
    will: tuple[str, bytes] | None = None,
    expect: int = 0,
) -> Paho:
    token = sdk(service, hub).get_client_access_token(
        client_protocol="MQTT", roles=roles, user_id=user_id, groups=groups
    )
    url = urlsplit(token["url"])
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=version,
        transport="websockets",
        reconnect_on_failure=False,
    )
    client.ws_set_options(path=f"{url.path}?{url.query}")
    if will is not None:
        client.will_set(will[0], will[1], qos=0)
    p = Paho(client)
    client.on_connect = lambda c, u, flags, rc, props=None: p.connack.put((rc, props))
    client.on_message = lambda c, u, msg: p.messages.put(msg)
    client.on_subscribe = lambda c, u, mid, codes, props=None: p.subacks.put(codes)
    client.on_publish = lambda c, u, mid, rc, props=None: p.pubacks.put((mid, rc))
    client.on_disconnect = lambda c, u, flags, rc, props=None: p.disconnects.put(rc)
    client.connect(url.hostname or "127.0.0.1", url.port or 80, keepalive=60)
    client.loop_start()
    rc, p.connack_properties = p.connack.get(timeout=TIMEOUT)
    assert int(getattr(rc, "value", rc)) == expect
    return p


@pytest.fixture
def clients() -> Iterator[list[Paho]]:
    made: list[Paho] = []
    yield made
    for p in made:
        p.close()


@pytest.mark.parametrize("version", [V311, V5])
def test_connect_subscribe_publish(
    service: ServiceThread, hub: str, clients: list[Paho], version: int
) -> None:
    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    a = paho(service, hub, "alice1", version=version, roles=roles, user_id="alice")
    b = paho(service, hub, "bob1", version=version, roles=roles)
    clients += [a, b]
    assert b.subscribe("t", 1) == [1]
    assert sdk(service, hub).connection_exists("alice1")
    a.client.publish("t", b"hello", qos=1)
    msg = b.message()
    assert (msg.topic, msg.payload, msg.qos, msg.retain) == ("t", b"hello", 1, False)
    a.client.publish("t", b"zero", qos=0)
    msg = b.message()
    assert (msg.payload, msg.qos) == (b"zero", 0)


def test_qos_downgraded_per_subscriber(
    service: ServiceThread, hub: str, clients: list[Paho]
) -> None:
    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    a = paho(service, hub, "pub1", roles=roles)
    b = paho(service, hub, "subq1", roles=roles)
    c = paho(service, hub, "subq0", roles=roles)
    clients += [a, b, c]
    assert b.subscribe("t", 1) == [1]
    assert c.subscribe("t", 0) == [0]
    a.client.publish("t", b"m", qos=1)
    assert b.message().qos == 1
    assert c.message().qos == 0


def test_qos2_exactly_once(service: ServiceThread, hub: str, clients: list[Paho]) -> None:
    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    a = paho(service, hub, "pub2", roles=roles)
    b = paho(service, hub, "sub2", roles=roles)
    clients += [a, b]
    assert b.subscribe("t", 2) == [2]
    info = a.client.publish("t", b"once", qos=2)
    info.wait_for_publish(TIMEOUT)
    msg = b.message()
    assert (msg.payload, msg.qos) == (b"once", 2)
    a.client.publish("t", b"next", qos=0)
    assert b.message().payload == b"next"  # nothing delivered twice in between


@pytest.mark.parametrize(("version", "denied"), [(V311, 128), (V5, 135)])
def test_subscribe_denied(
    service: ServiceThread, hub: str, clients: list[Paho], version: int, denied: int
) -> None:
    p = paho(service, hub, "c1", version=version, roles=["webpubsub.joinLeaveGroup.t"])
    clients.append(p)
    assert p.subscribe("u", 1) == [denied]
    assert p.subscribe("t", 1) == [1]


def test_unsupported_filters(service: ServiceThread, hub: str, clients: list[Paho]) -> None:
    p = paho(service, hub, "c1", roles=["webpubsub.joinLeaveGroup"])
    clients.append(p)
    assert p.subscribe("a/+") == [0xA2]
    assert p.subscribe("$share/g/t") == [0x9E]
    assert p.subscribe("$webpubsub/other") == [0x8F]


def test_publish_denied(service: ServiceThread, hub: str, clients: list[Paho]) -> None:
    p = paho(service, hub, "c1")
    clients.append(p)
    p.client.publish("t", b"x", qos=1)
    _mid, rc = p.pubacks.get(timeout=TIMEOUT)
    assert int(rc.value) == 0x87
    assert p.client.is_connected()
    p.client.publish("t", b"x", qos=0)
    assert int(p.disconnects.get(timeout=TIMEOUT).value) == 0x87


@pytest.mark.parametrize("version", [V311, V5])
def test_client_id_rules(service: ServiceThread, hub: str, version: int) -> None:
    # paho reports 3.1.1 return code 2 as 5.0's 0x85; test_v311_refusal_bytes reads the byte
    p = paho(service, hub, "mqttjs_1234", version=version, expect=0x85)
    p.client.loop_stop()


def test_assigned_client_id(service: ServiceThread, hub: str, clients: list[Paho]) -> None:
    token = sdk(service, hub).get_client_access_token(client_protocol="MQTT")
    url = urlsplit(token["url"])
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="", protocol=V5, transport="websockets"
    )
    client.ws_set_options(path=f"{url.path}?{url.query}")
    got: queue.Queue[Any] = queue.Queue()
    client.on_connect = lambda c, u, flags, rc, props=None: got.put((rc, props))
    client.connect(url.hostname or "", url.port or 80)
    client.loop_start()
    try:
        rc, props = got.get(timeout=TIMEOUT)
        assert rc == 0
        assigned = props.AssignedClientIdentifier
        assert assigned.isalnum() and 1 <= len(assigned) <= 128
        assert sdk(service, hub).connection_exists(assigned)
    finally:
        client.disconnect()
        client.loop_stop()


def test_takeover(service: ServiceThread, hub: str, clients: list[Paho]) -> None:
    first = paho(service, hub, "same1")
    second = paho(service, hub, "same1")
    clients += [second]
    assert int(first.disconnects.get(timeout=TIMEOUT).value) == 0x8E
    first.client.loop_stop()
    assert sdk(service, hub).connection_exists("same1")


def test_bad_token_refused(service: ServiceThread, hub: str) -> None:
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="c1", protocol=V5, transport="websockets"
    )
    client.ws_set_options(path=f"/clients/mqtt/hubs/{hub}?access_token=bad")
    with pytest.raises((OSError, mqtt.WebsocketConnectionError)):
        client.connect("127.0.0.1", urlsplit(service.endpoint).port or 80)


def test_interop_mqtt_to_json_and_back(
    service: ServiceThread, hub: str, clients: list[Paho]
) -> None:
    import asyncio

    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    m = paho(service, hub, "mq1", roles=roles, user_id="alice")
    clients.append(m)
    assert m.subscribe("t", 1) == [1]

    async def run() -> None:
        ws = await connect_json(service, hub, roles=roles)
        try:
            await ws.join("t")
            props = PahoProperties(PacketTypes.PUBLISH)
            props.ContentType = "application/json"
            m.client.publish("t", b'{"a":1}', qos=1, properties=props)
            frame = await ws.receive()
            assert frame["dataType"] == "json" and frame["data"] == {"a": 1}
            assert frame["fromUserId"] == "alice" and frame["group"] == "t"
            m.client.publish("t", b"\x01\x02", qos=0)
            frame = await ws.receive()
            assert frame["dataType"] == "binary"
            await ws.send({"type": "sendToGroup", "group": "t", "dataType": "text", "data": "hi"})
        finally:
            await ws.close()

    asyncio.run(run())
    msgs = [m.message() for _ in range(3)]
    mine = [x for x in msgs if x.payload == b"hi"]
    assert mine and mine[0].qos == 1
    assert mine[0].properties.ContentType == "text/plain"


def test_rest_sends_reach_mqtt(service: ServiceThread, hub: str, clients: list[Paho]) -> None:
    m = paho(service, hub, "mq2", user_id="u2", roles=["webpubsub.joinLeaveGroup"])
    clients.append(m)
    assert m.subscribe("g", 1) == [1]
    api = sdk(service, hub)
    api.send_to_group("g", {"a": 1})
    msg = m.message()
    assert msg.topic == "g" and json.loads(msg.payload) == {"a": 1}
    api.send_to_all("all", content_type="text/plain")
    msg = m.message()
    assert (msg.topic, msg.payload, msg.qos) == ("$webpubsub/server/messages", b"all", 1)
    api.send_to_user("u2", "user", content_type="text/plain")
    assert m.message().payload == b"user"
    api.send_to_connection("mq2", "conn", content_type="text/plain")
    assert m.message().payload == b"conn"


def test_rest_membership_and_close(service: ServiceThread, hub: str, clients: list[Paho]) -> None:
    m = paho(service, hub, "mq3", groups=["t0"])
    api = sdk(service, hub)
    api.send_to_group("t0", "claim", content_type="text/plain")
    assert m.message().payload == b"claim"
    api.add_connection_to_group("x", "mq3")
    api.send_to_group("x", "added", content_type="text/plain")
    msg = m.message()
    assert (msg.topic, msg.payload, msg.qos) == ("x", b"added", 0)
    api.close_connection("mq3", reason="bye")
    rc = m.disconnects.get(timeout=TIMEOUT)
    assert int(rc.value) == 0x98
    m.client.loop_stop()
    wait_until(lambda: not api.connection_exists("mq3"), "mq3 gone")


def test_will_on_lost_socket(service: ServiceThread, hub: str, clients: list[Paho]) -> None:
    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    watcher = paho(service, hub, "watch1", roles=roles)
    clients.append(watcher)
    assert watcher.subscribe("t") == [0]
    dying = paho(service, hub, "dying1", roles=roles, will=("t", b"gone"))
    sock = dying.client.socket()
    dying.client.loop_stop()
    assert sock is not None
    sock.close()
    assert watcher.message().payload == b"gone"


def test_normal_disconnect_sends_no_will(
    service: ServiceThread, hub: str, clients: list[Paho]
) -> None:
    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    watcher = paho(service, hub, "watch2", roles=roles)
    clients.append(watcher)
    assert watcher.subscribe("t") == [0]
    leaving = paho(service, hub, "leaving", roles=roles, will=("t", b"gone"))
    leaving.close()
    wait_until(lambda: not sdk(service, hub).connection_exists("leaving"), "leaving gone")
    leaving2 = paho(service, hub, "marker", roles=roles)
    leaving2.client.publish("t", b"after", qos=0)
    assert watcher.message().payload == b"after"
    leaving2.close()


# -- bad input over a raw WebSocket -----------------------------------------------------------


def _raw_ws(service: ServiceThread, hub: str, roles: list[str] | None = None) -> socket.socket:
    token = sdk(service, hub).get_client_access_token(client_protocol="MQTT", roles=roles)
    url = urlsplit(token["url"])
    sock = socket.create_connection((url.hostname or "", url.port or 80), timeout=TIMEOUT)
    sock.sendall(
        (
            f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"Sec-WebSocket-Protocol: mqtt" in head
    return sock


def _masked(frame: bytes) -> bytes:
    """Client frames must be masked: mask with zeros (payload unchanged)."""
    first, second = frame[0], frame[1]
    rest = frame[2:]
    if second == 126:
        return bytes((first, 0x80 | 126)) + rest[:2] + b"\0\0\0\0" + rest[2:]
    return bytes((first, 0x80 | second)) + b"\0\0\0\0" + rest


def _read_all(sock: socket.socket) -> bytes:
    """Server frames up to and including its close frame (or until the socket ends)."""
    data = b""
    pos = 0
    try:
        while True:
            # walk the complete frames received so far; stop after a close frame (0x88)
            while len(data) >= pos + 2:
                length, start = data[pos + 1] & 0x7F, pos + 2
                if length == 126:
                    if len(data) < pos + 4:
                        break
                    length, start = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 4
                if len(data) < start + length:
                    break
                if data[pos] == 0x88:
                    return data
                pos = start + length
            chunk = sock.recv(4096)
            if not chunk:
                return data
            data += chunk
    except (TimeoutError, ConnectionResetError):
        return data


CONNECT_5 = bytes.fromhex("10 0f 0004 4d515454 05 02 003c 00 0002 6331")


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (bytes.fromhex("30 05 0001 74 00 78"), "publish before connect"),
        (CONNECT_5 + CONNECT_5, "second connect"),
        (CONNECT_5 + bytes.fromhex("30 05 0002 c328 00"), "invalid UTF-8 topic"),
        (CONNECT_5 + bytes.fromhex("30 ff ff ff ff 01"), "bad remaining length"),
        (CONNECT_5 + bytes.fromhex("31 05 0001 74 00 78"), "retain on 5.0"),
    ],
)
def test_bad_packets_close(service: ServiceThread, hub: str, payload: bytes, why: str) -> None:
    sock = _raw_ws(service, hub)
    with sock:
        sock.sendall(_masked(binary_frame(payload)))
        data = _read_all(sock)
    assert b"\x88" in data, why  # a WebSocket close frame came back


def test_v311_refusal_bytes(service: ServiceThread, hub: str) -> None:
    """3.1.1 CONNACK return codes: 2 for a bad client id, 3 for keep alive 0 (mqtt spec 3.2)."""
    for client_id, keep_alive, code in ((b"a_b", 60, 2), (b"ab", 0, 3)):
        body = b"\x00\x04MQTT\x04\x02" + keep_alive.to_bytes(2, "big")
        body += len(client_id).to_bytes(2, "big") + client_id
        sock = _raw_ws(service, hub)
        with sock:
            sock.sendall(_masked(binary_frame(bytes((0x10, len(body))) + body)))
            data = _read_all(sock)
        assert bytes((0x82, 4, 0x20, 2, 0, code)) in data


def test_unsupported_version_gets_311_connack(service: ServiceThread, hub: str) -> None:
    body = b"\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x02ab"
    sock = _raw_ws(service, hub)
    with sock:
        sock.sendall(_masked(binary_frame(bytes((0x10, len(body))) + body)))
        data = _read_all(sock)
    assert bytes((0x82, 4, 0x20, 2, 0, 1)) in data


def test_text_frame_closes(service: ServiceThread, hub: str) -> None:
    sock = _raw_ws(service, hub)
    with sock:
        sock.sendall(_masked(text_frame(b"hello")))
        assert b"\x88" in _read_all(sock)


def test_packets_split_and_joined_across_frames(service: ServiceThread, hub: str) -> None:
    """One byte per WebSocket frame for CONNECT, then PINGREQ twice in one frame."""
    sock = _raw_ws(service, hub)
    with sock:
        for i in range(len(CONNECT_5)):
            sock.sendall(_masked(binary_frame(CONNECT_5[i : i + 1])))
        got = b""
        while b"\x20" not in got[:3]:
            got += sock.recv(4096)
        sock.sendall(_masked(binary_frame(bytes.fromhex("c000 c000"))))
        while got.count(b"\xd0\x00") < 2:
            got += sock.recv(4096)


def test_neighbours_unharmed(service: ServiceThread, hub: str, clients: list[Paho]) -> None:
    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    ok = paho(service, hub, "fine1", roles=roles)
    clients.append(ok)
    assert ok.subscribe("t") == [0]
    sock = _raw_ws(service, hub)
    with sock:
        sock.sendall(_masked(binary_frame(bytes.fromhex("ff ff ff ff ff"))))
        _read_all(sock)
    ok.client.publish("t", b"still", qos=0)
    assert ok.message().payload == b"still"


def test_keep_alive_timeout(service: ServiceThread, hub: str) -> None:
    """5.0 keep alive 1 s and silence: DISCONNECT 0x8D after 1.5 s, then close (mqtt 3.8)."""
    connect = bytes.fromhex("10 0f 0004 4d515454 05 02 0001 00 0002 6b61")
    sock = _raw_ws(service, hub)
    with sock:
        sock.sendall(_masked(binary_frame(connect)))
        data = _read_all(sock)
    assert b"\xe0\x01\x8d" in data


def _persistent(service: ServiceThread, hub: str, client_id: str, version: int) -> Paho:
    token = sdk(service, hub).get_client_access_token(
        client_protocol="MQTT", roles=["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    )
    url = urlsplit(token["url"])
    kwargs: dict[str, Any] = {} if version == V5 else {"clean_session": False}
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=version,
        transport="websockets",
        reconnect_on_failure=False,
        **kwargs,
    )
    client.ws_set_options(path=f"{url.path}?{url.query}")
    p = Paho(client)
    client.on_connect = lambda c, u, flags, rc, props=None: p.connack.put((flags, rc))
    client.on_message = lambda c, u, msg: p.messages.put(msg)
    client.on_subscribe = lambda c, u, mid, codes, props=None: p.subacks.put(codes)
    client.on_disconnect = lambda c, u, flags, rc, props=None: p.disconnects.put(rc)
    if version == V5:
        props = PahoProperties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 30
        client.connect(url.hostname or "", url.port or 80, clean_start=False, properties=props)
    else:
        client.connect(url.hostname or "", url.port or 80)
    client.loop_start()
    return p


@pytest.mark.parametrize("version", [V311, V5])
def test_session_survives_a_dropped_socket(service: ServiceThread, hub: str, version: int) -> None:
    """mqtt spec 3.6 / check 19: queued QoS 1 message arrives after resuming, no resubscribe."""
    first = _persistent(service, hub, "keep1", version)
    flags, rc = first.connack.get(timeout=TIMEOUT)
    assert rc == 0 and not flags.session_present
    assert first.subscribe("t", 1) == [1]
    sock = first.client.socket()
    first.client.loop_stop()
    assert sock is not None
    sock.close()
    api = sdk(service, hub)
    api.send_to_group("t", "while away", content_type="text/plain")
    assert api.connection_exists("keep1")
    second = _persistent(service, hub, "keep1", version)
    try:
        flags, rc = second.connack.get(timeout=TIMEOUT)
        assert rc == 0 and flags.session_present
        msg = second.message()
        assert (msg.topic, msg.payload, msg.qos) == ("t", b"while away", 1)
        api.send_to_group("t", "after", content_type="text/plain")
        assert second.message().payload == b"after"
    finally:
        second.close()


def test_clean_session_ends_with_the_socket(
    service: ServiceThread, hub: str, clients: list[Paho]
) -> None:
    p = paho(service, hub, "gone1", version=V311)
    sock = p.client.socket()
    p.client.loop_stop()
    assert sock is not None
    sock.close()
    wait_until(lambda: not sdk(service, hub).connection_exists("gone1"), "gone1 ended")


# -- upstream events (mqtt spec 5.3, 5.4) -------------------------------------------------------


@pytest.fixture
def upstream_hub(service: ServiceThread, hub: str) -> Iterator[tuple[str, UpstreamApp]]:
    """The test's hub with ``connected``/``disconnected`` going to a recording app."""
    with UpstreamApp() as app:
        handler = EventHandlerSettings(
            app.url_template, system_events=("connected", "disconnected")
        )
        settings = HubSettings((handler,))

        def configure() -> None:
            service.settings.hubs[hub.lower()] = settings

        service.call(configure)
        yield hub, app


def test_connected_and_disconnected_events(
    service: ServiceThread, upstream_hub: tuple[str, UpstreamApp]
) -> None:
    hub, app = upstream_hub
    p = paho(service, hub, "ev1", user_id="eve")
    p.close()
    app.wait_for(lambda rs: any(r.event == "disconnected" for r in rs))
    (connected,) = app.events("connected")
    (disconnected,) = app.events("disconnected")
    for event in (connected, disconnected):
        headers = event.headers
        assert headers["ce-subprotocol"] == "mqtt"
        assert headers["ce-connectionid"] == "ev1"
        assert headers["ce-userid"] == "eve"
        physical = headers["ce-physicalconnectionid"]
        assert headers["ce-source"] == f"/hubs/{hub.lower()}/client/ev1/{physical}"
        assert len(headers["ce-sessionid"]) == 32
    body = json.loads(disconnected.body)
    assert body["mqtt"] == {
        "initiatedByClient": True,
        "disconnectPacket": {"code": 0, "userProperties": None},
    }


@pytest.fixture
def connect_hub(service: ServiceThread, hub: str) -> Iterator[tuple[str, UpstreamApp]]:
    """The test's hub with every event (the blocking connect too) going to a recording app."""
    with UpstreamApp() as app:
        settings = HubSettings((EventHandlerSettings(app.url_template),))

        def configure() -> None:
            service.settings.hubs[hub.lower()] = settings

        service.call(configure)
        yield hub, app


def test_connect_event_decides(
    service: ServiceThread, connect_hub: tuple[str, UpstreamApp], clients: list[Paho]
) -> None:
    """mqtt spec 5.2: the handler sees the CONNECT; its userId/roles/groups make the session."""
    hub, app = connect_hub
    answer = {
        "userId": "u9",
        "roles": ["webpubsub.sendToGroup"],
        "groups": ["g0"],
        "subprotocol": "mqtt",
        "mqtt": {"userProperties": [{"name": "k", "value": "v"}]},
    }
    app.rules["connect"] = Reply(200, json.dumps(answer).encode())
    token = sdk(service, hub).get_client_access_token(client_protocol="MQTT")
    url = urlsplit(token["url"])
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="up1", protocol=V5, transport="websockets"
    )
    client.ws_set_options(path=f"{url.path}?{url.query}&extra=1")
    client.username_pw_set("alice", "secret")
    p = Paho(client)
    clients.append(p)
    client.on_connect = lambda c, u, flags, rc, props=None: p.connack.put((rc, props))
    client.on_message = lambda c, u, msg: p.messages.put(msg)
    client.connect(url.hostname or "", url.port or 80)
    client.loop_start()
    rc, props = p.connack.get(timeout=TIMEOUT)
    assert rc == 0
    assert props.UserProperty == [("k", "v")]
    (connect,) = app.events("connect")
    assert connect.headers["ce-subprotocol"] == "mqtt"
    assert "ce-physicalconnectionid" in connect.headers
    assert "ce-sessionid" not in connect.headers
    body = json.loads(connect.body)
    assert body["mqtt"] == {
        "protocolVersion": 5,
        "cleanStart": True,
        "username": "alice",
        "password": "c2VjcmV0",
        "userProperties": [],
    }
    assert body["query"]["extra"] == ["1"]
    api = sdk(service, hub)
    assert api.user_exists("u9")
    api.send_to_group("g0", "to g0", content_type="text/plain")
    assert p.message().payload == b"to g0"
    client.publish("g0", b"mine", qos=0)  # the handler's role allows it
    assert p.message().payload == b"mine"
    app.wait_for(lambda rs: any(r.event == "connected" for r in rs))


@pytest.mark.parametrize(
    ("version", "reply", "expected"),
    [
        (V5, Reply(401), 0x87),
        (V5, Reply(403, b'{"mqtt":{"code":138,"reason":"banned"}}'), 0x8A),
        (V5, Reply(500), 0x80),
        (V311, Reply(400, b'{"mqtt":{"code":4}}'), 0x86),  # paho reports 3.1.1's 4 as 0x86
    ],
)
def test_connect_event_refuses(
    service: ServiceThread,
    connect_hub: tuple[str, UpstreamApp],
    version: int,
    reply: Reply,
    expected: int,
) -> None:
    hub, app = connect_hub
    app.rules["connect"] = reply
    p = paho(service, hub, "no1", version=version, expect=expected)
    p.client.loop_stop()
    assert not sdk(service, hub).connection_exists("no1")
    assert not app.events("connected")


def test_user_event_round_trip(
    service: ServiceThread, connect_hub: tuple[str, UpstreamApp], clients: list[Paho]
) -> None:
    """mqtt spec 5.5: PUBLISH to $webpubsub/server/events/echo, answer on .../succeeded."""
    hub, app = connect_hub
    app.rules["echo"] = Reply(200, b"pong", {"Content-Type": "text/plain", "mqtt-x": "y"})
    app.rules["bad"] = Reply(400)
    p = paho(service, hub, "evt1")
    clients.append(p)
    props = PahoProperties(PacketTypes.PUBLISH)
    props.ContentType = "text/plain"
    props.CorrelationData = b"c1"
    props.UserProperty = [("x", "1")]
    p.client.publish("$webpubsub/server/events/echo", b"ping", qos=1, properties=props)
    msg = p.message()
    assert (msg.topic, msg.payload, msg.qos) == (
        "$webpubsub/server/events/echo/succeeded",
        b"pong",
        1,
    )
    assert ("azure-status-code", "200") in msg.properties.UserProperty
    assert ("x", "y") in msg.properties.UserProperty
    assert msg.properties.CorrelationData == b"c1"
    assert msg.properties.ContentType == "text/plain"
    (request,) = app.events("echo")
    assert request.headers["ce-type"] == "azure.webpubsub.user.echo"
    assert request.headers["content-type"] == "text/plain"
    assert request.headers["mqtt-x"] == "1"
    assert request.body == b"ping"
    p.client.publish("$webpubsub/server/events/bad", b"", qos=0)
    msg = p.message()
    assert msg.topic == "$webpubsub/server/events/bad/failed"
    assert ("azure-status-code", "400") in msg.properties.UserProperty


def test_user_event_content_type_must_be_a_mime_type(
    service: ServiceThread, connect_hub: tuple[str, UpstreamApp], clients: list[Paho]
) -> None:
    """mqtt spec 5.5: a 5.0 Content Type that is no MIME type would be the event's
    Content-Type header: PUBACK 0x99 at QoS 1, dropped at QoS 0; the client stays."""
    hub, app = connect_hub
    app.rules["echo"] = Reply(200, b"pong", {"Content-Type": "text/plain"})
    p = paho(service, hub, "ctype1")
    clients.append(p)
    assert p.connack_properties.ReceiveMaximum == 1000  # the service's own window
    for qos, content_type in ((1, "not a mime type"), (0, "text/plain\r\nx: y"), (1, "té/x")):
        props = PahoProperties(PacketTypes.PUBLISH)
        props.ContentType = content_type
        sent = p.client.publish("$webpubsub/server/events/echo", b"x", qos=qos, properties=props)
        mid, rc = p.pubacks.get(timeout=TIMEOUT)  # paho reports QoS 0 sends here too
        assert mid == sent.mid
        assert int(rc.value) == (0x99 if qos else 0)
    props = PahoProperties(PacketTypes.PUBLISH)
    props.ContentType = "application/json; charset=utf-8"
    p.client.publish("$webpubsub/server/events/echo", b"{}", qos=1, properties=props)
    assert p.message().topic == "$webpubsub/server/events/echo/succeeded"
    (request,) = app.events("echo")  # only the valid one reached the handler
    assert request.headers["content-type"] == "application/json; charset=utf-8"
    assert p.disconnects.empty()


def test_v5_properties_no_local_and_subscription_ids(
    service: ServiceThread, hub: str, clients: list[Paho]
) -> None:
    """mqtt spec 3.4 / 4.6: No Local, Subscription Identifier, properties MQTT to MQTT."""
    from paho.mqtt.subscribeoptions import SubscribeOptions

    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    a = paho(service, hub, "nl1", roles=roles)
    b = paho(service, hub, "nl2", roles=roles)
    clients += [a, b]
    a.client.subscribe("t", options=SubscribeOptions(qos=1, noLocal=True))
    assert [int(c.value) for c in a.subacks.get(timeout=TIMEOUT)] == [1]
    sub_props = PahoProperties(PacketTypes.SUBSCRIBE)
    sub_props.SubscriptionIdentifier = 7
    b.client.subscribe("t", qos=1, properties=sub_props)
    assert [int(c.value) for c in b.subacks.get(timeout=TIMEOUT)] == [1]
    props = PahoProperties(PacketTypes.PUBLISH)
    props.ContentType = "image/png"
    props.CorrelationData = b"\x01\x02"
    props.ResponseTopic = "replies"
    props.UserProperty = [("k", "v")]
    a.client.publish("t", b"own", qos=1, properties=props)
    msg = b.message()
    assert msg.payload == b"own"
    assert msg.properties.ContentType == "image/png"
    assert msg.properties.CorrelationData == b"\x01\x02"
    assert msg.properties.ResponseTopic == "replies"
    assert msg.properties.UserProperty == [("k", "v")]
    assert msg.properties.SubscriptionIdentifier == [7]
    b.client.publish("t", b"from b", qos=0)
    assert a.message().payload == b"from b"  # No Local hid only a's own message


def test_reused_qos2_packet_id_delivers_once(
    service: ServiceThread, hub: str, clients: list[Paho]
) -> None:
    """A QoS 2 PUBLISH sent again with its id before PUBREL is not delivered twice."""
    watcher = paho(service, hub, "w2", roles=["webpubsub.joinLeaveGroup"])
    clients.append(watcher)
    assert watcher.subscribe("t", 2) == [2]
    sock = _raw_ws(service, hub, roles=["webpubsub.sendToGroup"])
    publish = bytes.fromhex("34 06 0001 74 0009 00") + b"x"
    publish = bytes((0x34, len(publish) - 2)) + publish[2:]
    with sock:
        sock.sendall(_masked(binary_frame(CONNECT_5)))
        sock.sendall(_masked(binary_frame(publish + publish)))
        sock.sendall(_masked(binary_frame(bytes.fromhex("62 02 0009"))))  # PUBREL
        sock.sendall(_masked(binary_frame(bytes.fromhex("30 05 0001 74 00") + b"y")))
        sock.sendall(_masked(binary_frame(bytes.fromhex("30 05 0001 74 00") + b"z")))
        # paho hands a QoS 2 message over at PUBREL, so x may come after y: compare as sets
        got = sorted(watcher.message().payload for _ in range(3))
        assert got == [b"x", b"y", b"z"]  # one x only
        sock.sendall(_masked(binary_frame(bytes.fromhex("e0 00"))))


def test_oversized_packet(service: ServiceThread, hub: str) -> None:
    """A PUBLISH announcing more than the limit: DISCONNECT 0x95 before it is buffered."""
    sock = _raw_ws(service, hub)
    with sock:
        sock.sendall(_masked(binary_frame(CONNECT_5)))
        sock.sendall(_masked(binary_frame(bytes.fromhex("30 ff ff ff 7f"))))  # 268 MB
        data = _read_all(sock)
    assert b"\xe0\x01\x95" in data


def test_metrics_tell_mqtt_apart(service: ServiceThread, hub: str, clients: list[Paho]) -> None:
    """/metrics labels MQTT connections ``subprotocol="mqtt"`` and counts their publishes."""
    from tests.ops.helpers import wait_for_metric

    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    p = paho(service, hub, "met1", roles=roles)
    clients.append(p)
    assert p.subscribe("t") == [0]
    p.client.publish("t", b"12345", qos=0)
    assert p.message().payload == b"12345"
    key = hub.lower()
    wait_for_metric(
        service,
        lambda m: (
            m.value("webpubsub_connections_opened_total", hub=key, subprotocol="mqtt") == 1
            and m.value("webpubsub_messages_received_total", hub=key, kind="sendToGroup") == 1
            and m.value("webpubsub_messages_received_total", hub=key, kind="joinGroup") == 1
        ),
    )


def test_will_delay_interval(service: ServiceThread, hub: str, clients: list[Paho]) -> None:
    """5.0 Will Delay Interval 1 s with a 30 s session: the will goes after the delay, not
    at the drop (a marker published at once arrives first)."""
    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    watcher = paho(service, hub, "wd0", roles=roles)
    clients.append(watcher)
    assert watcher.subscribe("t") == [0]
    token = sdk(service, hub).get_client_access_token(client_protocol="MQTT", roles=roles)
    url = urlsplit(token["url"])
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id="wd1", protocol=V5, transport="websockets"
    )
    client.ws_set_options(path=f"{url.path}?{url.query}")
    will_props = PahoProperties(PacketTypes.WILLMESSAGE)
    will_props.WillDelayInterval = 1
    client.will_set("t", b"late will", properties=will_props)
    connect_props = PahoProperties(PacketTypes.CONNECT)
    connect_props.SessionExpiryInterval = 30
    connected: queue.Queue[Any] = queue.Queue()
    client.on_connect = lambda *a: connected.put(True)
    client.connect(url.hostname or "", url.port or 80, clean_start=False, properties=connect_props)
    client.loop_start()
    assert connected.get(timeout=TIMEOUT)
    sock = client.socket()
    client.loop_stop()
    assert sock is not None
    sock.close()
    sdk(service, hub).send_to_group("t", "marker", content_type="text/plain")
    assert watcher.message().payload == b"marker"
    # Sent by the service's once-a-second tick, 1-2 s after the drop: on a loaded CI
    # machine that tick (in this test process's service thread) may come late.
    assert watcher.messages.get(timeout=3 * TIMEOUT).payload == b"late will"


def _mqtt_packets(sock: socket.socket, parser: Parser, until: type) -> list[Any]:
    """Read server frames, parse their MQTT packets, stop after the first ``until`` packet."""
    got: list[Any] = []
    data = b""
    while True:
        while len(data) >= 2:
            length, start = data[1] & 0x7F, 2
            if length == 126:
                length, start = int.from_bytes(data[2:4], "big"), 4
            if len(data) < start + length:
                break
            payload, data = data[start : start + length], data[start + length :]
            for packet in parser.feed(payload):
                got.append(packet)
                if isinstance(packet, until):
                    return got
        chunk = sock.recv(65536)
        assert chunk, f"closed; got {got}"
        data += chunk


def test_receive_maximum_holds_messages_back(service: ServiceThread, hub: str) -> None:
    """5.0 Receive Maximum 1: one QoS 1 PUBLISH in flight; the next after its PUBACK."""
    connect = bytes.fromhex("10 12 0004 4d515454 05 02 003c 03 210001 0002 7231")
    subscribe = bytes.fromhex("82 07 0001 00 0001 74 01")  # t at QoS 1
    sock = _raw_ws(service, hub, roles=["webpubsub.joinLeaveGroup"])
    parser = Parser(5)
    with sock:
        sock.sendall(_masked(binary_frame(connect + subscribe)))
        _mqtt_packets(sock, parser, SubAck)
        api = sdk(service, hub)
        for text in ("one", "two", "three"):
            api.send_to_group("t", text, content_type="text/plain")
        sock.sendall(_masked(binary_frame(bytes.fromhex("c0 00"))))
        got = _mqtt_packets(sock, parser, PingResp)
        publishes = [p for p in got if isinstance(p, Publish)]
        assert [p.payload for p in publishes] == [b"one"]
        received = [b"one"]
        for _ in range(2):
            pid = publishes[-1].packet_id or 0
            sock.sendall(_masked(binary_frame(bytes((0x40, 2)) + pid.to_bytes(2, "big"))))
            publishes = [p for p in _mqtt_packets(sock, parser, Publish) if isinstance(p, Publish)]
            received.append(publishes[-1].payload)
        assert received == [b"one", b"two", b"three"]


def test_a_1_mib_payload_passes(service: ServiceThread, hub: str, clients: list[Paho]) -> None:
    """The message limit is the payload's: a 1 MiB PUBLISH (plus headers) goes through."""
    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    p = paho(service, hub, "big1", roles=roles)
    clients.append(p)
    assert p.subscribe("t", 1) == [1]
    payload = bytes(range(256)) * 4096  # 1 MiB
    p.client.publish("t", payload, qos=1)
    assert p.message().payload == payload


# -- the handshake (mqtt spec 1) ---------------------------------------------------------------


def _upgrade(service: ServiceThread, path: str, extra: str = "") -> bytes:
    """Send a raw upgrade request; the status line and headers of the answer."""
    port = urlsplit(service.endpoint).port or 80
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return head


def test_handshake_rules(service: ServiceThread, hub: str) -> None:
    from tests.server.helpers import client_token

    mqtt_aud = f"{service.endpoint}/clients/mqtt/hubs/{hub}"
    token = client_token(service, hub, audience=mqtt_aud)
    path = f"/clients/mqtt/hubs/{hub}"
    # the token in an Authorization header, no subprotocol offered: accepted as MQTT
    assert _upgrade(service, path, f"Authorization: Bearer {token}\r\n").startswith(b"HTTP/1.1 101")
    # only other subprotocols offered: 400
    answer = _upgrade(service, f"{path}?access_token={token}", "Sec-WebSocket-Protocol: x\r\n")
    assert answer.startswith(b"HTTP/1.1 400")
    # a token minted for /client/hubs/{hub}: 401
    default = client_token(service, hub)
    assert _upgrade(service, f"{path}?access_token={default}").startswith(b"HTTP/1.1 401")
    # no token: 401, unless the hub allows anonymous clients
    assert _upgrade(service, path).startswith(b"HTTP/1.1 401")
    settings = HubSettings((), allow_anonymous=True)
    service.call(lambda: service.settings.hubs.__setitem__(hub.lower(), settings))
    assert _upgrade(service, path, "Sec-WebSocket-Protocol: mqtt\r\n").startswith(b"HTTP/1.1 101")


def test_rest_permissions_act_on_mqtt(
    service: ServiceThread, hub: str, clients: list[Paho]
) -> None:
    """REST grant / check / revoke permission on an MQTT connection (mqtt spec 2.3, 4.7)."""
    p = paho(service, hub, "perm1")
    clients.append(p)
    api = sdk(service, hub)
    api.grant_permission("sendToGroup", "perm1", target_name="t")
    assert api.has_permission("sendToGroup", "perm1", target_name="t")
    p.client.publish("t", b"x", qos=1)
    assert int(p.pubacks.get(timeout=TIMEOUT)[1].value) == 0
    api.revoke_permission("sendToGroup", "perm1", target_name="t")
    p.client.publish("t", b"x", qos=1)
    assert int(p.pubacks.get(timeout=TIMEOUT)[1].value) == 0x87
    api.grant_permission("joinLeaveGroup", "perm1")
    assert p.subscribe("any") == [0]


def test_will_on_rest_close(service: ServiceThread, hub: str, clients: list[Paho]) -> None:
    roles = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    watcher = paho(service, hub, "watch3", roles=roles)
    clients.append(watcher)
    assert watcher.subscribe("t") == [0]
    closed = paho(service, hub, "closed1", roles=roles, will=("t", b"closed by REST"))
    sdk(service, hub).close_connection("closed1", reason="admin")
    assert watcher.message().payload == b"closed by REST"
    closed.client.loop_stop()


@pytest.mark.parametrize("group", ["bad\x00group", "x" * 2000, ""])
def test_a_token_naming_a_bad_group_is_refused_at_the_upgrade(
    service: ServiceThread, hub: str, group: str
) -> None:
    """The token's groups are checked as they enter, as on the Web PubSub endpoint."""
    audience = f"{service.endpoint}/clients/mqtt/hubs/{hub}"
    token = mint_client_token(ACCESS_KEY, audience, groups=[group])
    response = httpx.get(
        audience,
        params={"access_token": token},
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol": "mqtt",
        },
        timeout=TIMEOUT,
    )
    assert response.status_code == 400, response.text
    assert "group" in response.json()["message"].lower()
