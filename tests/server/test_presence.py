"""``joined``/``left`` group presence events (spec-next 6) over real sockets and HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.test_upstream import connect, receive_json
from tests.upstream_app import Recorded, UpstreamApp
from webpubsub.aio import WebPubSubServiceClient
from webpubsub.core.events import EventHandlerSettings, EventKind, HubSettings
from webpubsub.server.config import ConfigError, load_settings
from webpubsub.testing import ServiceThread


@pytest.fixture
def app() -> Iterator[UpstreamApp]:
    with UpstreamApp() as running:
        yield running


def configure(
    service: ServiceThread, hub: str, app: UpstreamApp, events: tuple[str, ...], **extra: object
) -> None:
    handler = EventHandlerSettings(app.url_template, group_presence_events=events, **extra)  # type: ignore[arg-type]
    service.call(lambda: service.settings.hubs.__setitem__(hub.lower(), HubSettings((handler,))))


def presence(app: UpstreamApp) -> list[tuple[str, str]]:
    return [
        (r.event, json.loads(r.body)["group"])
        for r in app.requests
        if r.event in ("joined", "left")
    ]


def wait_presence(app: UpstreamApp, count: int) -> list[tuple[str, str]]:
    def seen(rs: list[Recorded]) -> bool:
        return len([r for r in rs if r.event in ("joined", "left")]) >= count

    app.wait_for(seen)
    return presence(app)


async def test_every_real_membership_change_is_announced_in_order(
    service: ServiceThread, hub: str, app: UpstreamApp
) -> None:
    configure(service, hub, app, ("joined", "left"))
    rest = WebPubSubServiceClient.from_connection_string(service.connection_string, hub=hub)
    async with (
        rest,
        await connect(service, hub, roles=["webpubsub.joinLeaveGroup"], groups=["initial"]) as ws,
    ):
        connection_id = (await receive_json(ws))["connectionId"]
        for ack_id, frame in enumerate(
            (
                {"type": "joinGroup", "group": "room"},
                {"type": "joinGroup", "group": "room"},  # idempotent: no second event
                {"type": "leaveGroup", "group": "room"},
                {"type": "leaveGroup", "group": "room"},
            ),
            start=1,
        ):
            await ws.send(json.dumps({**frame, "ackId": ack_id}))
            assert (await receive_json(ws))["success"] is True
        await rest.group("rest").add_connection(connection_id)
        await rest.group("rest").remove_connection(connection_id)
        await rest.group("kept").add_connection(connection_id)
    seen = wait_presence(app, 8)
    assert seen[:6] == [
        ("joined", "initial"),
        ("joined", "room"),
        ("left", "room"),
        ("joined", "rest"),
        ("left", "rest"),
        ("joined", "kept"),
    ]
    # The connection ended: one left per group it was still in.
    assert sorted(seen[6:]) == [("left", "initial"), ("left", "kept")]
    app.wait_for(lambda rs: any(r.event == "disconnected" for r in rs))
    events = [r.event for r in app.requests if r.method == "POST"]
    # connected first, disconnected last: one connection's notices go in order.
    assert events[:2] == ["connect", "connected"] and events[-1] == "disconnected"
    joined = next(r for r in app.requests if r.event == "joined")
    assert joined.headers["ce-type"] == "azure.webpubsub.gp.joined"
    assert joined.headers["ce-eventname"] == "joined"
    assert joined.headers["ce-connectionid"] == connection_id
    assert joined.headers["ce-source"] == f"/hubs/{hub.lower()}/client/{connection_id}"
    assert joined.headers["content-type"] == "application/json; charset=utf-8"
    assert joined.path == f"/{hub.lower()}/joined"
    left = next(r for r in app.requests if r.event == "left")
    assert left.headers["ce-type"] == "azure.webpubsub.gp.left"


async def test_only_the_events_and_groups_asked_for(
    service: ServiceThread, hub: str, app: UpstreamApp
) -> None:
    configure(service, hub, app, ("left",), group_filters=("room*",))
    async with await connect(service, hub, roles=["webpubsub.joinLeaveGroup"]) as ws:
        await receive_json(ws)
        for ack_id, (kind, group) in enumerate(
            (("join", "room1"), ("join", "other"), ("leave", "other"), ("leave", "room1")),
            start=1,
        ):
            await ws.send(json.dumps({"type": f"{kind}Group", "group": group, "ackId": ack_id}))
            assert (await receive_json(ws))["success"] is True
    app.wait_for(lambda rs: any(r.event == "disconnected" for r in rs))
    assert presence(app) == [("left", "room1")]


async def test_no_presence_events_unless_configured(
    service: ServiceThread, hub: str, app: UpstreamApp
) -> None:
    configure(service, hub, app, ())
    async with await connect(service, hub, roles=["webpubsub.joinLeaveGroup"]) as ws:
        await receive_json(ws)
        await ws.send(json.dumps({"type": "joinGroup", "group": "g", "ackId": 1}))
        assert (await receive_json(ws))["success"] is True
    app.wait_for(lambda rs: any(r.event == "disconnected" for r in rs))
    assert presence(app) == []


def test_toml_form(tmp_path: Path) -> None:
    config = tmp_path / "webpubsub.toml"
    config.write_text(
        "[[hubs.chat.event_handlers]]\n"
        'url_template = "http://127.0.0.1:9/{event}"\n'
        'group_presence_events = { event_names = ["joined", "left"], group_filters = ["a*"] }\n'
        "[[hubs.chat.event_handlers]]\n"
        'url_template = "http://127.0.0.1:9/other/{event}"\n'
    )
    settings = load_settings(str(config), env={})
    first, second = settings.hubs["chat"].event_handlers
    assert first.group_presence_events == ("joined", "left")
    assert first.group_filters == ("a*",)
    assert second.group_presence_events == ()
    assert settings.hubs["chat"].handler_for("abc", EventKind.JOINED) is first
    assert settings.hubs["chat"].handler_for("b", EventKind.JOINED) is None
    config.write_text(
        "[[hubs.chat.event_handlers]]\n"
        'url_template = "http://127.0.0.1:9/{event}"\n'
        'group_presence_events = { event_names = ["entered"] }\n'
    )
    with pytest.raises(ConfigError, match="unknown group presence event"):
        load_settings(str(config), env={})
