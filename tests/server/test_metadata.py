"""Message metadata (spec-next 3) over real sockets: client frames, REST headers, the
upstream both ways, reliable replay, and every refusal in the protocol's own form."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.server.helpers import (
    TIMEOUT,
    assert_error_detail,
    connect_json,
    connect_raw,
    rest_send,
)
from tests.upstream_app import Reply, UpstreamApp
from webpubsub.core.events import EventHandlerSettings, HubSettings
from webpubsub.testing import ServiceThread

ROLES = ["webpubsub.sendToGroup", "webpubsub.joinLeaveGroup"]


def publish(metadata: Any, **extra: Any) -> dict[str, Any]:
    return {
        "type": "sendToGroup",
        "group": "g",
        "dataType": "text",
        "data": "hi",
        "metadata": metadata,
        **extra,
    }


async def test_client_metadata_reaches_group_members_as_sent(
    service: ServiceThread, hub: str
) -> None:
    async with (
        await connect_json(service, hub, roles=ROLES) as sender,
        await connect_json(
            service, hub, roles=ROLES, subprotocols=["json.reliable.webpubsub.azure.v1"]
        ) as reliable,
    ):
        raw = await connect_raw(service, hub, groups=["g"])
        for client in (sender, reliable):
            assert (await client.join("g"))["success"] is True
        metadata = {"Trace-Id": "abc", "priority": "high", "empty": ""}
        assert (await sender.request(publish(metadata)))["success"] is True
        for client in (sender, reliable):
            message = await client.receive()
            assert message["data"] == "hi" and message["metadata"] == metadata, message
        assert "sequenceId" in message
        assert await asyncio.wait_for(raw.recv(), TIMEOUT) == "hi"  # simple: payload only
        # Metadata and no data: an empty text message.
        only = {"type": "sendToGroup", "group": "g", "metadata": {"k": "v"}}
        assert (await sender.request(only))["success"] is True
        message = await sender.receive()
        assert (message["dataType"], message["data"], message["metadata"]) == (
            "text",
            "",
            {"k": "v"},
        )
        # No metadata: no member at all; null is no metadata.
        assert (await sender.request(publish(None)))["success"] is True
        assert "metadata" not in await sender.receive()
        await raw.close()


BAD_METADATA: list[Any] = [
    {"k": "x" * 1025},
    {"k" * 257: "v"},
    {f"k{i}": "v" * 1000 for i in range(9)},  # over 8,192 in all
    {"bad key": "v"},
    {"": "v"},
    {"k": 1},
    {"k": None},
    {"k": "é"},
    {"k": "line\nbreak"},
    ["k", "v"],
    "k=v",
]


@pytest.mark.parametrize("metadata", BAD_METADATA, ids=range(len(BAD_METADATA)))
async def test_bad_metadata_is_a_bad_request_and_harms_no_one(
    service: ServiceThread, hub: str, metadata: Any
) -> None:
    async with await connect_json(service, hub, roles=ROLES) as client:
        assert (await client.join("g"))["success"] is True
        ack = await client.request(publish(metadata))
        assert ack["success"] is False and ack["error"]["name"] == "BadRequest", ack
        # Without an ackId it is dropped; the connection goes on.
        await client.send(publish(metadata))
        assert (await client.publish("g", "after", "text"))["success"] is True
        assert (await client.receive())["data"] == "after"


async def test_repeated_metadata_key_is_a_bad_request(service: ServiceThread, hub: str) -> None:
    async with await connect_json(service, hub, roles=ROLES) as client:
        await client.ws.send(
            '{"type":"sendToGroup","group":"g","ackId":7,"dataType":"text","data":"x",'
            '"metadata":{"k":"1","k":"2"}}'
        )
        ack = await client.ack(7)
        assert ack["error"]["name"] == "BadRequest", ack


async def test_rest_metadata_headers(service: ServiceThread, hub: str) -> None:
    async with await connect_json(service, hub, roles=ROLES) as client:
        headers = {
            "X-WebPubSub-Metadata-Trace-Id": "abc",
            "x-webpubsub-metadata-folded": "first,  second",
        }
        response = rest_send_with(service, hub, headers)
        assert response.status_code == 202
        message = await client.receive()
        assert message["metadata"] == {"trace-id": "abc", "folded": "second"}
        for bad in (
            {"X-WebPubSub-Metadata-k": "x" * 1025},
            {"X-WebPubSub-Metadata-": "v"},
            {f"X-WebPubSub-Metadata-k{i}": "v" * 1000 for i in range(9)},
        ):
            assert_error_detail(rest_send_with(service, hub, bad), 400)
        assert rest_send(service, hub).status_code == 202
        assert (await client.receive())["data"] == "marker"  # nothing of the bad ones


def rest_send_with(service: ServiceThread, hub: str, headers: dict[str, str]) -> Any:
    from tests.server.helpers import rest_call

    return rest_call(
        service,
        "POST",
        f"/api/hubs/{hub}/:send",
        content=b"m",
        content_type="text/plain",
        headers=headers,
    )


@pytest.fixture
def app(service: ServiceThread, hub: str) -> Iterator[UpstreamApp]:
    with UpstreamApp() as running:
        settings = HubSettings((EventHandlerSettings(running.url_template),))
        service.call(lambda: service.settings.hubs.__setitem__(hub.lower(), settings))
        yield running


async def test_metadata_to_and_from_the_event_handler(
    service: ServiceThread, hub: str, app: UpstreamApp
) -> None:
    app.rules["e"] = [
        Reply(200, b"ok", {"Content-Type": "text/plain", "X-WebPubSub-Metadata-Status": "done"}),
        Reply(204, headers={"X-WebPubSub-Metadata-Status": "empty"}),
        Reply(204),
        Reply(200, b"x", {"Content-Type": "text/plain", "X-WebPubSub-Metadata-Bad Key": "v"}),
    ]
    async with await connect_json(service, hub, roles=ROLES) as client:
        event = {"type": "event", "event": "e", "dataType": "text", "data": "x"}
        ack = await client.request({**event, "metadata": {"Trace": "1", "trace": "2", "a": "b"}})
        assert ack["success"] is True
        reply = await client.receive()
        assert (reply["data"], reply["metadata"]) == ("ok", {"status": "done"})
        [request] = app.events("e")
        # Keys lowercased; those equal but for case collapse, the last one wins.
        assert request.headers["x-webpubsub-metadata-trace"] == "2"
        assert request.headers["x-webpubsub-metadata-a"] == "b"
        assert (await client.request(event))["success"] is True
        reply = await client.receive()
        assert (reply["dataType"], reply["data"], reply["metadata"]) == (
            "text",
            "",
            {"status": "empty"},
        )
        assert not any(k.startswith("x-webpubsub-metadata") for k in app.events("e")[1].headers)
        assert (await client.request(event))["success"] is True  # 204, nothing: no message
        ack = await client.request(event)  # invalid metadata in the answer: a failure
        assert ack["success"] is False and ack["error"]["name"] == "InternalServerError"
        assert (await client.join("still-here"))["success"] is True
        assert client._inbox == []
        await client.ws.send(json.dumps({"type": "ping"}))
        assert (await client.receive())["type"] == "pong"
