"""Client invocations (spec-next 1) over real sockets: ``invoke`` goes to the event handler
as a user event, its answer comes back as ``invokeResponse``."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ACCESS_KEY
from tests.server.helpers import JsonClient, async_wait_until, connect_json
from tests.upstream_app import Reply, UpstreamApp
from webpubsub.core.events import EventHandlerSettings, HubSettings
from webpubsub.server.config import Limits, Settings
from webpubsub.testing import ServiceThread

ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


@pytest.fixture
def app(service: ServiceThread, hub: str) -> Iterator[UpstreamApp]:
    with UpstreamApp() as running:
        handler = EventHandlerSettings(running.url_template, user_event_pattern="e,slow,meta")
        settings = HubSettings((handler,))
        service.call(lambda: service.settings.hubs.__setitem__(hub.lower(), settings))
        yield running


async def invoke(client: JsonClient, invocation_id: str, **fields: Any) -> dict[str, Any]:
    await client.send({"type": "invoke", "invocationId": invocation_id, **fields})
    while True:
        frame = await client.receive()
        if frame.get("type") == "invokeResponse" and frame["invocationId"] == invocation_id:
            return frame
        raise AssertionError(f"unexpected frame {frame}")


ANSWERS: list[tuple[Reply, dict[str, Any]]] = [
    (
        Reply(200, b'{"ok":true}', {"Content-Type": "application/json; charset=utf-8"}),
        {"success": True, "dataType": "json", "data": {"ok": True}},
    ),
    (
        Reply(200, b"pong", {"Content-Type": "text/plain"}),
        {"success": True, "dataType": "text", "data": "pong"},
    ),
    (
        Reply(200, b"\x01\x02\x03", {"Content-Type": "application/octet-stream"}),
        {"success": True, "dataType": "binary", "data": base64.b64encode(b"\x01\x02\x03").decode()},
    ),
    (Reply(204), {"success": True}),
    (Reply(200, b"null", {"Content-Type": "application/json"}), {"success": True}),
    (
        Reply(200, b"{bad", {"Content-Type": "application/json"}),
        {"success": False, "name": "InternalServerError"},
    ),
    (
        Reply(200, b"<x/>", {"Content-Type": "application/xml"}),
        {"success": False, "name": "InternalServerError"},
    ),
    (Reply(400, b"bad input"), {"success": False, "name": "BadRequest", "message": "bad input"}),
    (Reply(401), {"success": False, "name": "Unauthorized", "message": "Upstream returned 401."}),
    (Reply(404), {"success": False, "name": "NotFound"}),
    (Reply(500), {"success": False, "name": "InternalServerError"}),
]


@pytest.mark.parametrize(("reply", "expected"), ANSWERS, ids=range(len(ANSWERS)))
async def test_upstream_answers_become_invoke_responses(
    service: ServiceThread, hub: str, app: UpstreamApp, reply: Reply, expected: dict[str, Any]
) -> None:
    app.rules["e"] = reply
    async with await connect_json(service, hub) as client:
        response = await invoke(
            client, "1", target="event", event="e", dataType="json", data={"orderId": 1}
        )
        assert response["type"] == "invokeResponse" and response["success"] is expected["success"]
        if expected["success"]:
            assert {k: v for k, v in response.items() if k in ("dataType", "data")} == {
                k: v for k, v in expected.items() if k in ("dataType", "data")
            }
        else:
            assert response["error"]["name"] == expected["name"], response
            assert isinstance(response["error"]["message"], str) and response["error"]["message"]
            if "message" in expected:
                assert response["error"]["message"] == expected["message"]
        [request] = app.events("e")
        assert request.body == b'{"orderId": 1}'  # relayed as the client wrote it
        assert request.headers["content-type"] == "application/json"
        assert request.headers["ce-type"] == "azure.webpubsub.user.e"
        # Nothing else was sent: no server message besides the invokeResponse.
        await client.send({"type": "ping"})
        assert (await client.receive())["type"] == "pong"


async def test_refusals_without_calling_the_upstream(
    service: ServiceThread, hub: str, app: UpstreamApp
) -> None:
    async with await connect_json(service, hub, roles=ROLES) as client:
        for invocation_id, fields, name in [
            ("a", {"event": "nobody"}, "NotFound"),
            ("b", {"event": "e", "target": "group"}, "BadRequest"),
            ("c", {"event": ""}, "BadRequest"),
            ("d", {"event": "e", "dataType": "binary", "data": "not base64!"}, "BadRequest"),
            ("e", {"event": "e", "metadata": {"k": 1}}, "BadRequest"),
            ("x" * 257, {"event": "e"}, "BadRequest"),
        ]:
            response = await invoke(client, invocation_id, **fields)
            assert (response["success"], response["error"]["name"]) == (False, name), response
        assert app.events("e") == []
        assert (await client.join("g"))["success"] is True
        # No string invocationId: a malformed frame, the client is declined.
        await client.send({"type": "invoke", "invocationId": 1, "event": "e"})
        code, _, _ = await client.until_closed()
        assert code == 1008


async def test_no_payload_metadata_and_state(
    service: ServiceThread, hub: str, app: UpstreamApp
) -> None:
    state = base64.b64encode(b'{"n":1}').decode()
    app.rules["meta"] = Reply(
        204, headers={"X-WebPubSub-Metadata-Status": "done", "ce-connectionState": state}
    )
    async with await connect_json(service, hub) as client:
        response = await invoke(client, "1", event="meta", metadata={"Trace": "t"})
        assert response == {
            "type": "invokeResponse",
            "invocationId": "1",
            "success": True,
            "metadata": {"status": "done"},
        }
        await invoke(client, "1", event="meta")  # an id may be reused once answered
        first, second = app.events("meta")
        assert first.body == b"" and first.headers["content-type"] == "text/plain"
        assert first.headers["x-webpubsub-metadata-trace"] == "t"
        assert second.headers["ce-connectionstate"] == state


async def test_concurrent_calls_cancel_and_duplicates(
    service: ServiceThread, hub: str, app: UpstreamApp
) -> None:
    release = threading.Event()
    app.rules["slow"] = Reply(200, b"slow", {"Content-Type": "text/plain"}, hold=release)
    app.rules["e"] = Reply(200, b"fast", {"Content-Type": "text/plain"})
    try:
        async with await connect_json(service, hub, roles=ROLES) as client:
            await client.send({"type": "invoke", "invocationId": "s", "event": "slow"})
            await client.send({"type": "invoke", "invocationId": "s", "event": "slow"})  # ignored
            await client.send({"type": "invoke", "invocationId": "c", "event": "slow"})
            await asyncio.to_thread(
                app.wait_for, lambda rs: len([r for r in rs if r.event == "slow"]) == 2
            )
            await client.send({"type": "cancelInvocation", "invocationId": "c"})
            await client.send({"type": "cancelInvocation", "invocationId": "unknown"})
            # Neither blocks the connection: a join and another invocation go first.
            assert (await client.join("g"))["success"] is True
            assert (await invoke(client, "f", event="e"))["data"] == "fast"
            release.set()
            response = await invoke(client, "s", event="slow")  # the duplicate is not sent
            assert response["data"] == "slow"
            await client.send({"type": "ping"})
            assert (await client.receive())["type"] == "pong"  # nothing for the cancelled one
            assert len(app.events("slow")) == 2
    finally:
        release.set()


async def test_timeout(hub: str) -> None:
    with UpstreamApp() as app:
        settings = Settings(
            port=0,
            access_keys=[ACCESS_KEY],
            limits=Limits(upstream_timeout=1.0),
            hubs={"*": HubSettings((EventHandlerSettings(app.url_template),))},
        )
        release = threading.Event()
        app.rules["e"] = Reply(204, hold=release)
        try:
            with ServiceThread(settings) as own:
                async with await connect_json(own, hub, roles=ROLES) as client:
                    response = await invoke(client, "1", event="e")
                    assert response["error"]["name"] == "Timeout", response
                    assert (await client.publish("g", "alive", "text"))["success"] is True
        finally:
            release.set()


def test_frames_are_json(service: ServiceThread) -> None:
    from webpubsub.protocols.json import encode_invoke_response

    frame = encode_invoke_response("1", error=("BadRequest", "x"))
    assert json.loads(frame[2:]) == {
        "type": "invokeResponse",
        "invocationId": "1",
        "success": False,
        "error": {"name": "BadRequest", "message": "x"},
    }


async def test_the_end_of_the_connection_aborts_its_calls(
    service: ServiceThread, hub: str, app: UpstreamApp
) -> None:
    release = threading.Event()
    app.rules["slow"] = Reply(204, hold=release)
    try:
        client = await connect_json(service, hub)
        await client.send({"type": "invoke", "invocationId": "1", "event": "slow"})
        await asyncio.to_thread(app.wait_for, lambda rs: any(r.event == "slow" for r in rs))
        upstream = service.service.upstream

        def pending() -> int:
            return sum(len(calls) for calls in upstream._invocations.values())

        assert service.call(pending) == 1
        await client.close()
        await async_wait_until(lambda: service.call(pending) == 0, "the call was aborted")
    finally:
        release.set()
