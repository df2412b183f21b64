"""MQTT.js 5 against /clients/mqtt/hubs/{hub} (mqtt spec 8, acceptance checks).

MQTT.js in Node writes one WebSocket frame per packet field, so every test here also
checks that the service reassembles packets across frames (mqtt spec 1.3).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from azure.messaging.webpubsubservice import WebPubSubServiceClient

from tests.compat.test_express_handler import ExpressApp
from tests.nodejs import JsError, NodeDriver, node_missing
from webpubsub.core.events import EventHandlerSettings, HubSettings
from webpubsub.testing import ServiceThread

if node_missing():
    pytest.skip(node_missing() or "", allow_module_level=True)

BOTH = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


@pytest.fixture
def js() -> Iterator[NodeDriver]:
    driver = NodeDriver("mqtt_client.mjs")
    yield driver
    driver.close()


def sdk(service: ServiceThread, hub: str) -> WebPubSubServiceClient:
    return WebPubSubServiceClient.from_connection_string(service.connection_string, hub=hub)


def url(service: ServiceThread, hub: str, **claims: Any) -> str:
    token = sdk(service, hub).get_client_access_token(client_protocol="MQTT", **claims)
    return str(token["url"])


def connect(
    js: NodeDriver, service: ServiceThread, hub: str, name: str, version: int = 5, **claims: Any
) -> dict[str, Any]:
    options = {"clientId": name, "protocolVersion": version}
    result: dict[str, Any] = js.request(
        "connect", client=name, url=url(service, hub, **claims), options=options
    )
    return result


def message(js: NodeDriver, name: str) -> dict[str, Any]:
    return js.wait_for(
        lambda line: line.get("event") == "message" and line.get("client") == name,
        f"a message for {name}",
    )


@pytest.mark.parametrize("version", [4, 5])
def test_connect(js: NodeDriver, service: ServiceThread, hub: str, version: int) -> None:
    connack = connect(js, service, hub, "a1", version)
    assert connack["sessionPresent"] is False
    if version == 5:
        assert connack["reasonCode"] == 0
        props = connack["properties"]
        assert props["retainAvailable"] is False
        assert props["wildcardSubscriptionAvailable"] is False
        assert props["sharedSubscriptionAvailable"] is False
    else:
        assert connack["returnCode"] == 0


@pytest.mark.parametrize(("version", "code"), [(4, 2), (5, 133)])
def test_client_id_refused(
    js: NodeDriver, service: ServiceThread, hub: str, version: int, code: int
) -> None:
    with pytest.raises(JsError) as info:
        connect(js, service, hub, "mqttjs_1234", version)
    assert info.value.error.get("code") == code


@pytest.mark.parametrize(("version", "denied"), [(4, 128), (5, 135)])
def test_subscribe_denied(
    js: NodeDriver, service: ServiceThread, hub: str, version: int, denied: int
) -> None:
    connect(js, service, hub, "s1", version, roles=["webpubsub.joinLeaveGroup.t"])
    with pytest.raises(JsError) as info:
        js.request("subscribe", client="s1", topic="u", options={"qos": 1})
    assert info.value.error["granted"] == [denied]
    granted = js.request("subscribe", client="s1", topic="t", options={"qos": 1})
    assert granted[0]["qos"] == 1


def test_publish_denied(js: NodeDriver, service: ServiceThread, hub: str) -> None:
    connect(js, service, hub, "p1")
    with pytest.raises(JsError) as info:
        js.request("publish", client="p1", topic="t", payload="x", options={"qos": 1})
    assert info.value.error.get("code") == 135
    js.request("publish", client="p1", topic="t", payload="x", options={"qos": 0})
    line = js.wait_for(lambda line: line.get("event") == "disconnect", "DISCONNECT")
    assert line["reasonCode"] == 135


def test_qos_between_mqtt_clients(js: NodeDriver, service: ServiceThread, hub: str) -> None:
    connect(js, service, hub, "A", roles=BOTH, user_id="alice")
    connect(js, service, hub, "B", roles=BOTH)
    connect(js, service, hub, "C", 4, roles=BOTH)
    js.request("subscribe", client="B", topic="t", options={"qos": 2})
    js.request("subscribe", client="C", topic="t", options={"qos": 0})
    payload = {"$binary": "AQID"}
    js.request("publish", client="A", topic="t", payload=payload, options={"qos": 1})
    got_b, got_c = message(js, "B"), message(js, "C")
    assert (got_b["qos"], got_b["payload"]) == (1, b"\x01\x02\x03")
    assert (got_c["qos"], got_c["payload"]) == (0, b"\x01\x02\x03")
    js.request("publish", client="A", topic="t", payload="two", options={"qos": 2})
    got_b = message(js, "B")
    assert (got_b["qos"], got_b["payload"]) == (2, b"two")


def test_rest_to_mqtt(js: NodeDriver, service: ServiceThread, hub: str) -> None:
    connect(js, service, hub, "R1", roles=BOTH, user_id="ru")
    js.request("subscribe", client="R1", topic="g", options={"qos": 1})
    api = sdk(service, hub)
    api.send_to_group("g", "hi", content_type="text/plain")
    got = message(js, "R1")
    assert (got["topic"], got["payload"], got["qos"], got["retain"]) == ("g", b"hi", 1, False)
    assert got["properties"]["contentType"] == "text/plain"
    api.send_to_user("ru", "direct", content_type="text/plain")
    got = message(js, "R1")
    assert (got["topic"], got["payload"]) == ("$webpubsub/server/messages", b"direct")


def test_close_connection(js: NodeDriver, service: ServiceThread, hub: str) -> None:
    connect(js, service, hub, "X1")
    sdk(service, hub).close_connection("X1", reason="bye")
    line = js.wait_for(lambda line: line.get("event") == "disconnect", "DISCONNECT")
    assert line["reasonCode"] == 152
    assert line["properties"]["reasonString"] == "bye"
    js.wait_for(lambda line: line.get("event") == "close", "close")


def test_takeover(js: NodeDriver, service: ServiceThread, hub: str) -> None:
    connect(js, service, hub, "T1")
    js.request("connect", client="T1b", url=url(service, hub), options={"clientId": "T1"})
    line = js.wait_for(
        lambda line: line.get("event") == "disconnect" and line.get("client") == "T1", "0x8E"
    )
    assert line["reasonCode"] == 142
    assert sdk(service, hub).connection_exists("T1")


@pytest.mark.parametrize("protocol", ["json", "reliable"])
def test_interop_with_web_pubsub_client(
    js: NodeDriver, service: ServiceThread, hub: str, protocol: str
) -> None:
    """MQTT.js <-> the official @azure/web-pubsub-client in group ``t`` (mqtt spec 4)."""
    wps = NodeDriver("client.mjs")
    try:
        wps_url = sdk(service, hub).get_client_access_token(roles=BOTH)["url"]
        wps.request("start", client="w", url=wps_url, protocol=protocol)
        wps.request("call", client="w", method="joinGroup", args=["t"])
        connect(js, service, hub, "M1", roles=BOTH, user_id="alice")
        js.request("subscribe", client="M1", topic="t", options={"qos": 1})

        def group_message() -> dict[str, Any]:
            line = wps.wait_for(lambda line: line.get("event") == "group-message", "message")
            found: dict[str, Any] = line["message"]
            return found

        js.request(
            "publish",
            client="M1",
            topic="t",
            payload='{"a":1}',
            options={"qos": 1, "properties": {"contentType": "application/json"}},
        )
        got = group_message()
        assert (got["dataType"], got["data"], got["group"]) == ("json", {"a": 1}, "t")
        assert got["fromUserId"] == "alice"
        js.request("publish", client="M1", topic="t", payload="hi", options={"qos": 0})
        got = group_message()
        assert (got["dataType"], got["data"]) == ("binary", b"hi")
        js.request(
            "publish",
            client="M1",
            topic="t",
            payload="txt",
            options={"qos": 1, "properties": {"contentType": "text/plain"}},
        )
        assert group_message()["data"] == "txt"
        for _ in range(3):
            message(js, "M1")  # its own three publishes, as a subscriber of t
        wps.request("call", client="w", method="sendToGroup", args=["t", "from wps", "text"])
        got_mqtt = message(js, "M1")
        assert (got_mqtt["topic"], got_mqtt["payload"], got_mqtt["qos"]) == ("t", b"from wps", 1)
        assert got_mqtt["properties"]["contentType"] == "text/plain"
    finally:
        wps.close()


# -- @azure/web-pubsub-express as the MQTT clients' event handler (mqtt spec 8, 21-24) ----------


class ExpressMqtt(ExpressApp):
    """tests/node/express_mqtt.mjs: prints one JSON line per event express handled."""

    def __init__(self, hub: str) -> None:
        super().__init__(hub, "express_mqtt.mjs")

    def event(self, name: str) -> Any:
        while (line := self.next_line())["event"] != name:
            pass
        return line


@pytest.fixture
def express(service: ServiceThread, hub: str) -> Iterator[ExpressMqtt]:
    app = ExpressMqtt(hub.lower())
    template = f"http://127.0.0.1:{app.port}/eventhandler/{{event}}"
    settings = HubSettings((EventHandlerSettings(template),))
    service.call(lambda: service.settings.hubs.__setitem__(hub.lower(), settings))
    try:
        yield app
    finally:
        app.close()


def test_express_connect_events(
    js: NodeDriver, service: ServiceThread, hub: str, express: ExpressMqtt
) -> None:
    options = {
        "clientId": "E1",
        "protocolVersion": 5,
        "username": "alice",
        "password": "pw",
        "properties": {"userProperties": {"a": "b"}},
    }
    connack = js.request("connect", client="E1", url=url(service, hub), options=options)
    assert connack["properties"]["userProperties"] == {"k": "v"}
    connect = express.event("connect")
    context = connect["context"]
    assert context["clientProtocol"] == "mqtt"
    assert context["mqtt"]["physicalConnectionId"]
    assert connect["mqtt"]["protocolVersion"] == 5
    assert connect["mqtt"]["username"] == "alice"
    assert connect["mqtt"]["password"] == "cHc="
    assert connect["mqtt"]["userProperties"] == [{"name": "a", "value": "b"}]
    assert connect["subprotocols"] == ["mqtt"]
    connected = express.event("connected")
    assert connected["context"]["mqtt"]["sessionId"]
    # the handler's roles: this client may publish to t now
    js.request("publish", client="E1", topic="t", payload="x", options={"qos": 1})
    js.request("end", client="E1")
    disconnected = express.event("disconnected")
    assert disconnected["mqtt"]["initiatedByClient"] is True
    assert disconnected["mqtt"]["disconnectPacket"]["code"] == 0


@pytest.mark.parametrize(
    ("version", "username", "code"), [(4, "intruder", 5), (5, "intruder", 135), (5, "banned", 138)]
)
def test_express_refusals(
    js: NodeDriver,
    service: ServiceThread,
    hub: str,
    express: ExpressMqtt,
    version: int,
    username: str,
    code: int,
) -> None:
    options = {"clientId": "E2", "protocolVersion": version, "username": username}
    with pytest.raises(JsError) as info:
        js.request("connect", client="E2", url=url(service, hub), options=options)
    assert info.value.error.get("code") == code


def test_express_user_event(
    js: NodeDriver, service: ServiceThread, hub: str, express: ExpressMqtt
) -> None:
    options = {"clientId": "E3", "protocolVersion": 5}
    js.request("connect", client="E3", url=url(service, hub), options=options)
    publish = {"qos": 1, "properties": {"contentType": "text/plain", "correlationData": "c1"}}
    js.request(
        "publish",
        client="E3",
        topic="$webpubsub/server/events/echo",
        payload="ping",
        options=publish,
    )
    user = express.event("user")
    assert (user["name"], user["dataType"], user["data"]) == ("echo", "text", "ping")
    assert user["clientProtocol"] == "mqtt"
    got = message(js, "E3")
    assert (got["topic"], got["payload"]) == ("$webpubsub/server/events/echo/succeeded", b"pong")
    assert got["properties"]["userProperties"]["azure-status-code"] == "200"
    js.request(
        "publish",
        client="E3",
        topic="$webpubsub/server/events/fail",
        payload="",
        options={"qos": 0},
    )
    got = message(js, "E3")
    assert got["topic"] == "$webpubsub/server/events/fail/failed"
    assert got["properties"]["userProperties"]["azure-status-code"] == "400"
