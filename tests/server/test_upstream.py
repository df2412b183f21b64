"""The service calling event handlers over real HTTP (spec 5): the service side of issue 4."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import ACCESS_KEY, SECONDARY_KEY
from tests.upstream_app import Reply, UpstreamApp
from webpubsub.auth.tokens import client_audience, mint_client_token
from webpubsub.core.events import EventHandlerSettings, HubSettings
from webpubsub.server.config import Limits, Settings
from webpubsub.testing import ServiceThread

JSON_PROTOCOL = "json.webpubsub.azure.v1"


@pytest.fixture
def app() -> Iterator[UpstreamApp]:
    with UpstreamApp() as running:
        yield running


@pytest.fixture
def handled_hub(service: ServiceThread, hub: str, app: UpstreamApp) -> str:
    """The test's hub, with every event going to ``app``; fast retries for the test."""
    settings = HubSettings((EventHandlerSettings(app.url_template),))

    def configure() -> None:
        service.settings.hubs[hub.lower()] = settings
        service.service.upstream.retry_delays = (0.01, 0.01, 0.01)

    service.call(configure)
    return hub


def client_url(service: ServiceThread, hub: str, **claims: Any) -> str:
    token = mint_client_token(ACCESS_KEY, client_audience(service.endpoint, hub), **claims)
    return f"{client_audience(service.endpoint, hub).replace('http', 'ws', 1)}?access_token={token}"


async def connect(
    service: ServiceThread, hub: str, protocol: str | None = JSON_PROTOCOL, **claims: Any
) -> ClientConnection:
    subprotocols = [protocol] if protocol else None
    return await websockets.connect(client_url(service, hub, **claims), subprotocols=subprotocols)  # type: ignore[list-item]


async def receive_json(ws: ClientConnection) -> Any:
    return json.loads(await ws.recv(decode=True))


class TestConnectEvent:
    async def test_connect_assigns_user_groups_and_roles(
        self, service: ServiceThread, handled_hub: str, app: UpstreamApp
    ) -> None:
        answer = {"userId": "assigned", "groups": ["room"], "roles": ["webpubsub.sendToGroup"]}
        app.rules["connect"] = Reply(
            200, json.dumps(answer).encode(), {"Content-Type": "application/json"}
        )
        async with await connect(service, handled_hub, user_id="from-token") as ws:
            connected = await receive_json(ws)
            assert connected["userId"] == "assigned"
            conn = service.call(
                lambda: service.service.node.find_connection(
                    handled_hub.lower(), connected["connectionId"]
                )
            )
            assert conn is not None
            assert conn.groups == {"room"}
            assert conn.roles == {"webpubsub.sendToGroup"}
        [request] = app.events("connect")
        body = json.loads(request.body)
        assert body["claims"]["sub"] == ["from-token"]
        assert body["subprotocols"] == [JSON_PROTOCOL]
        assert request.headers["ce-type"] == "azure.webpubsub.sys.connect"
        assert "ce-subprotocol" not in request.headers

    @pytest.mark.parametrize("status", [400, 401, 403, 500])
    async def test_connect_rejection_reaches_the_client(
        self, service: ServiceThread, handled_hub: str, app: UpstreamApp, status: int
    ) -> None:
        app.rules["connect"] = Reply(status, b"no")
        with pytest.raises(websockets.InvalidStatus) as raised:
            await connect(service, handled_hub)
        assert raised.value.response.status_code == status
        assert not service.call(lambda: handled_hub.lower() in service.service.node.hubs)

    async def test_connect_answer_with_bad_json_rejects_with_500(
        self, service: ServiceThread, handled_hub: str, app: UpstreamApp
    ) -> None:
        app.rules["connect"] = Reply(200, b"{not json", {"Content-Type": "application/json"})
        with pytest.raises(websockets.InvalidStatus) as raised:
            await connect(service, handled_hub)
        assert raised.value.response.status_code == 500


class TestCloudEventHeaders:
    async def test_headers_and_signature_for_each_key(
        self, service: ServiceThread, handled_hub: str, app: UpstreamApp
    ) -> None:
        async with await connect(service, handled_hub, user_id="u1") as ws:
            connection_id = (await receive_json(ws))["connectionId"]
        requests = app.wait_for(lambda rs: any(r.event == "disconnected" for r in rs))
        connected = next(r for r in requests if r.event == "connected")
        headers = connected.headers
        assert headers["ce-specversion"] == "1.0"
        assert headers["ce-awpsversion"] == "1.0"
        assert headers["ce-type"] == "azure.webpubsub.sys.connected"
        assert headers["ce-source"] == f"/hubs/{handled_hub.lower()}/client/{connection_id}"
        assert headers["ce-userid"] == "u1"
        assert headers["ce-connectionid"] == connection_id
        assert headers["ce-hub"] == handled_hub.lower()
        assert headers["ce-subprotocol"] == JSON_PROTOCOL
        assert headers["webhook-request-origin"] == "127.0.0.1"
        expected = [
            "sha256=" + hmac.new(k.encode(), connection_id.encode(), hashlib.sha256).hexdigest()
            for k in (ACCESS_KEY, SECONDARY_KEY)
        ]
        assert headers["ce-signature"].split(",") == expected
        options = [r for r in requests if r.method == "OPTIONS"]
        assert options and options[0].path.endswith("/validate")
        assert options[0].headers["webhook-request-origin"] == "127.0.0.1"
        disconnected = next(r for r in requests if r.event == "disconnected")
        assert json.loads(disconnected.body) == {"reason": ""}


class TestUserEvents:
    @pytest.mark.parametrize(
        ("content_type", "body", "data_type", "data"),
        [
            ("text/plain; charset=utf-8", b"hi there", "text", "hi there"),
            ("application/json", b'{"a":1}', "json", {"a": 1}),
            ("application/octet-stream", b"\x01\x02", "binary", "AQI="),
        ],
    )
    async def test_reply_then_ack(
        self,
        service: ServiceThread,
        handled_hub: str,
        app: UpstreamApp,
        content_type: str,
        body: bytes,
        data_type: str,
        data: Any,
    ) -> None:
        app.rules["ask"] = Reply(200, body, {"Content-Type": content_type})
        async with await connect(service, handled_hub) as ws:
            await receive_json(ws)
            await ws.send(
                json.dumps(
                    {
                        "type": "event",
                        "event": "ask",
                        "ackId": 1,
                        "dataType": "json",
                        "data": {"q": 1},
                    }
                )
            )
            reply = await receive_json(ws)
            ack = await receive_json(ws)
        assert reply == {"type": "message", "from": "server", "dataType": data_type, "data": data}
        assert ack == {"type": "ack", "ackId": 1, "success": True}
        [request] = app.events("ask")
        assert request.headers["content-type"] == "application/json"
        assert request.headers["ce-type"] == "azure.webpubsub.user.ask"
        assert json.loads(request.body) == {"q": 1}

    async def test_failure_acks_internal_server_error(
        self, service: ServiceThread, handled_hub: str, app: UpstreamApp
    ) -> None:
        app.rules["ask"] = Reply(500)
        async with await connect(service, handled_hub) as ws:
            await receive_json(ws)
            await ws.send(
                json.dumps(
                    {"type": "event", "event": "ask", "ackId": 5, "dataType": "text", "data": "x"}
                )
            )
            ack = await receive_json(ws)
        assert ack["success"] is False
        assert ack["error"]["name"] == "InternalServerError"

    async def test_connection_state_round_trip(
        self, service: ServiceThread, handled_hub: str, app: UpstreamApp
    ) -> None:
        state = base64.b64encode(b'{"n":1}').decode()
        app.rules["ask"] = [Reply(204, headers={"ce-connectionState": state}), Reply(204)]
        async with await connect(service, handled_hub) as ws:
            await receive_json(ws)
            for ack_id in (1, 2):
                await ws.send(
                    json.dumps(
                        {
                            "type": "event",
                            "event": "ask",
                            "ackId": ack_id,
                            "dataType": "text",
                            "data": "x",
                        }
                    )
                )
                assert (await receive_json(ws))["success"] is True
        first, second = app.events("ask")
        assert "ce-connectionstate" not in first.headers
        assert second.headers["ce-connectionstate"] == state
        disconnected = app.wait_for(lambda rs: any(r.event == "disconnected" for r in rs))
        assert (
            next(r for r in disconnected if r.event == "disconnected").headers["ce-connectionstate"]
            == state
        )

    async def test_simple_client_frames_are_message_events(
        self, service: ServiceThread, handled_hub: str, app: UpstreamApp
    ) -> None:
        app.rules["message"] = Reply(200, b"pong", {"Content-Type": "text/plain"})
        async with await connect(service, handled_hub, protocol=None) as ws:
            await ws.send("ping")
            assert await ws.recv() == "pong"
        [request] = app.events("message")
        assert request.headers["content-type"] == "text/plain"
        assert request.body == b"ping"

    async def test_simple_client_is_dropped_when_the_event_fails(
        self, service: ServiceThread, handled_hub: str, app: UpstreamApp
    ) -> None:
        app.rules["message"] = Reply(500)
        async with await connect(service, handled_hub, protocol=None) as ws:
            await ws.send("ping")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011

    async def test_events_of_one_connection_go_in_order(
        self, service: ServiceThread, handled_hub: str, app: UpstreamApp
    ) -> None:
        async with await connect(service, handled_hub) as ws:
            await receive_json(ws)
            for i in range(20):
                await ws.send(
                    json.dumps(
                        {
                            "type": "event",
                            "event": "seq",
                            "dataType": "text",
                            "data": str(i),
                            "ackId": i + 1,
                        }
                    )
                )
            acks = [await receive_json(ws) for _ in range(20)]
        assert [a["ackId"] for a in acks] == list(range(1, 21))
        assert [r.body for r in app.events("seq")] == [str(i).encode() for i in range(20)]


class TestNonBlockingEvents:
    async def test_disconnected_is_retried_on_5xx(
        self, service: ServiceThread, handled_hub: str, app: UpstreamApp
    ) -> None:
        app.rules["disconnected"] = [Reply(503), Reply(503), Reply(204)]
        async with await connect(service, handled_hub) as ws:
            await receive_json(ws)
        app.wait_for(lambda rs: len([r for r in rs if r.event == "disconnected"]) == 3)

    async def test_hanging_connected_handler_does_not_hold_up_delivery(
        self, service: ServiceThread, handled_hub: str, app: UpstreamApp
    ) -> None:
        app.rules["connected"] = Reply(204, delay=2.0)
        async with await connect(service, handled_hub, roles=["webpubsub.joinLeaveGroup"]) as ws:
            await receive_json(ws)
            await ws.send(json.dumps({"type": "joinGroup", "group": "g", "ackId": 1}))
            assert (await receive_json(ws))["success"] is True


class TestAbuseProtection:
    async def test_refusing_handler_is_not_called(self, service: ServiceThread, hub: str) -> None:
        with UpstreamApp(allowed_origin="someone-else.example.com") as refusing:
            settings = HubSettings((EventHandlerSettings(refusing.url_template),))
            service.call(lambda: service.settings.hubs.__setitem__(hub.lower(), settings))
            with pytest.raises(websockets.InvalidStatus) as raised:
                await connect(service, hub)
            assert raised.value.response.status_code == 500
            assert [r.method for r in refusing.requests] == ["OPTIONS"]


class TestTimeoutsAndReload:
    async def test_hanging_user_event_times_out_and_others_are_served(self, hub: str) -> None:
        with UpstreamApp() as slow:
            slow.rules["slow"] = Reply(204, delay=1.5)
            settings = Settings(
                port=0,
                access_keys=[ACCESS_KEY],
                limits=Limits(upstream_timeout=0.3),
                hubs={"*": HubSettings((EventHandlerSettings(slow.url_template),))},
            )
            with ServiceThread(settings) as own:
                async with (
                    await connect(own, hub) as waiting,
                    await connect(own, hub, roles=["webpubsub.joinLeaveGroup"]) as other,
                ):
                    await receive_json(waiting)
                    await receive_json(other)
                    await waiting.send(
                        json.dumps(
                            {
                                "type": "event",
                                "event": "slow",
                                "ackId": 1,
                                "dataType": "text",
                                "data": "x",
                            }
                        )
                    )
                    await other.send(json.dumps({"type": "joinGroup", "group": "g", "ackId": 1}))
                    assert (await receive_json(other))["success"] is True
                    ack = await receive_json(waiting)
                    assert ack["error"]["name"] == "InternalServerError"

    async def test_reload_switches_handlers(self, hub: str) -> None:
        with UpstreamApp() as first, UpstreamApp() as second:

            def settings_for(app: UpstreamApp) -> Settings:
                return Settings(
                    port=0,
                    access_keys=[ACCESS_KEY],
                    hubs={"*": HubSettings((EventHandlerSettings(app.url_template),))},
                )

            with ServiceThread(settings_for(first)) as own:
                async with await connect(own, hub) as ws:
                    await receive_json(ws)
                own.call(lambda: own.service.reload(settings_for(second)))
                async with await connect(own, hub) as ws:
                    await receive_json(ws)
                assert len(first.events("connect")) == 1
                assert len(second.events("connect")) == 1
