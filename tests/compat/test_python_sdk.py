"""The official Python SDKs against the running service (spec 1, 2.2, 3, 4).

``azure-messaging-webpubsubservice`` drives every REST operation it has; the effects are
observed on real WebSocket clients: small ``json.webpubsub.azure.v1`` clients from the
shared helpers, simple clients, and the official ``azure-messaging-webpubsubclient``.
The official client is built with ``protocol_type=JSON`` (the reliable subprotocol is a
separate feature) and without automatic reconnection, so every callback is deterministic.
"""

from __future__ import annotations

import asyncio
import base64
import json
import queue
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError
from azure.messaging.webpubsubclient import WebPubSubClient
from azure.messaging.webpubsubclient.models import (
    CallbackType,
    OnConnectedArgs,
    OnDisconnectedArgs,
    OnGroupDataMessageArgs,
    OnServerDataMessageArgs,
    SendMessageError,
    WebPubSubDataType,
    WebPubSubProtocolType,
)
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ACCESS_KEY, SECONDARY_KEY
from tests.server.helpers import (
    JSON_SUBPROTOCOL,
    TIMEOUT,
    JsonClient,
    async_wait_until,
    client_url,
    close_all,
    connect_json,
    connect_raw,
    hub_snapshot,
    open_json_url,
    wait_until,
)
from webpubsub.testing import ServiceThread

JOIN = "webpubsub.joinLeaveGroup"
SEND = "webpubsub.sendToGroup"

# The official client 1.1.0 waits for acks with a lost-wakeup race: when the ack arrives
# before the sending thread starts waiting (about one call in five against a local service),
# the call still succeeds, but only after ``ack_timeout`` (default 30 s). ``open()`` has the
# same race on its start wait. Short timeouts keep those stalls cheap; a local service
# answers in milliseconds, so they stay far above any real latency.
OFFICIAL_ACK_TIMEOUT = 1.0
OFFICIAL_START_TIMEOUT = 2.0


@pytest.fixture
def sdk(service: ServiceThread, hub: str) -> Iterator[WebPubSubServiceClient]:
    with WebPubSubServiceClient.from_connection_string(service.connection_string, hub=hub) as c:
        yield c


def server_message(data_type: str, data: Any) -> dict[str, Any]:
    return {"type": "message", "from": "server", "dataType": data_type, "data": data}


def group_message(group: str, data_type: str, data: Any) -> dict[str, Any]:
    return {"type": "message", "from": "group", "group": group, "dataType": data_type, "data": data}


async def connect_with_sdk_token(
    sdk: WebPubSubServiceClient, **token_args: Any
) -> tuple[JsonClient, dict[str, Any]]:
    """A JSON client connected to the URL ``get_client_access_token`` returned."""
    access = sdk.get_client_access_token(**token_args)
    client = await open_json_url(access["url"])
    return client, access


async def marker(sdk: WebPubSubServiceClient, *clients: JsonClient, text: str = "marker") -> None:
    """Send ``text`` to each client; its next frame must be that marker.

    Messages to one connection arrive in the order the service processed them, so a
    marker proves that nothing else was delivered before it.
    """
    for client in clients:
        sdk.send_to_connection(client.connection_id, text, content_type="text/plain")
    for client in clients:
        assert await client.receive() == server_message("text", text)


# -- sending ------------------------------------------------------------------------------


async def test_send_to_all_json_text_binary(
    service: ServiceThread, hub: str, sdk: WebPubSubServiceClient
) -> None:
    a = await connect_json(service, hub, user_id="u1")
    b = await connect_json(service, hub, user_id="u2")
    anonymous = await connect_json(service, hub)
    simple = await connect_raw(service, hub, user_id="u3")
    clients = [a, b, anonymous]
    try:
        sdk.send_to_all({"hello": "world", "n": [1, 2.5, None]})
        sdk.send_to_all("plain text", content_type="text/plain")
        sdk.send_to_all(b"\x00\x01\xfe\xff", content_type="application/octet-stream")
        sdk.send_to_all("a JSON string")  # default content type: application/json
        for client in clients:
            assert await client.receive() == server_message(
                "json", {"hello": "world", "n": [1, 2.5, None]}
            )
            assert await client.receive() == server_message("text", "plain text")
            binary = await client.receive()
            assert binary == server_message(
                "binary", base64.b64encode(b"\x00\x01\xfe\xff").decode()
            )
            assert await client.receive() == server_message("json", "a JSON string")
        assert json.loads(await asyncio.wait_for(simple.recv(), TIMEOUT)) == {
            "hello": "world",
            "n": [1, 2.5, None],
        }
        assert await asyncio.wait_for(simple.recv(), TIMEOUT) == "plain text"
        assert await asyncio.wait_for(simple.recv(), TIMEOUT) == b"\x00\x01\xfe\xff"
        assert await asyncio.wait_for(simple.recv(), TIMEOUT) == '"a JSON string"'
    finally:
        await close_all([*clients, simple])


async def test_send_to_all_excluded_and_filter(
    service: ServiceThread, hub: str, sdk: WebPubSubServiceClient
) -> None:
    a = await connect_json(service, hub, user_id="u1")
    b = await connect_json(service, hub, user_id="u2")
    c = await connect_json(service, hub, user_id="u3")
    try:
        sdk.send_to_all(
            "not for a, b", content_type="text/plain", excluded=[a.connection_id, b.connection_id]
        )
        assert await c.receive() == server_message("text", "not for a, b")
        await marker(sdk, a, b)

        sdk.send_to_all({"only": "u1"}, filter="userId eq 'u1'")
        assert await a.receive() == server_message("json", {"only": "u1"})
        await marker(sdk, b, c)

        sdk.send_to_all(
            "u2 or u3 but not c",
            content_type="text/plain",
            filter="userId eq 'u2' or userId eq 'u3'",
            excluded=[c.connection_id],
        )
        assert await b.receive() == server_message("text", "u2 or u3 but not c")
        await marker(sdk, a, c)

        sdk.add_connection_to_group("vip", c.connection_id)
        sdk.send_to_all("vip only", content_type="text/plain", filter="'vip' in groups")
        assert await c.receive() == server_message("text", "vip only")
        await marker(sdk, a, b)
    finally:
        await close_all([a, b, c])


async def test_send_to_user(service: ServiceThread, hub: str, sdk: WebPubSubServiceClient) -> None:
    first = await connect_json(service, hub, user_id="user 1/x")
    second = await connect_json(service, hub, user_id="user 1/x")
    other = await connect_json(service, hub, user_id="u2")
    try:
        sdk.send_to_user("user 1/x", {"to": "user"})
        for client in (first, second):
            assert await client.receive() == server_message("json", {"to": "user"})
        sdk.send_to_user(
            "user 1/x",
            b"\x01",
            content_type="application/octet-stream",
            filter=f"connectionId ne '{first.connection_id}'",
        )
        assert await second.receive() == server_message("binary", "AQ==")
        await marker(sdk, first, other)
        sdk.send_to_user("nobody", "fire and forget", content_type="text/plain")
    finally:
        await close_all([first, second, other])


async def test_send_to_connection(
    service: ServiceThread, hub: str, sdk: WebPubSubServiceClient
) -> None:
    a = await connect_json(service, hub, user_id="same")
    b = await connect_json(service, hub, user_id="same")
    try:
        sdk.send_to_connection(a.connection_id, {"direct": True})
        sdk.send_to_connection(a.connection_id, "text", content_type="text/plain")
        sdk.send_to_connection(a.connection_id, b"\xff", content_type="application/octet-stream")
        assert await a.receive() == server_message("json", {"direct": True})
        assert await a.receive() == server_message("text", "text")
        assert await a.receive() == server_message("binary", "/w==")
        await marker(sdk, b)
        sdk.send_to_connection("no-such-connection", "ignored", content_type="text/plain")
    finally:
        await close_all([a, b])


async def test_send_to_group_excluded_and_filter(
    service: ServiceThread, hub: str, sdk: WebPubSubServiceClient
) -> None:
    a = await connect_json(service, hub, user_id="u1")
    b = await connect_json(service, hub, user_id="u2")
    outsider = await connect_json(service, hub, user_id="u3")
    simple = await connect_raw(service, hub, user_id="u4", groups=["room"])
    try:
        sdk.add_connection_to_group("room", a.connection_id)
        sdk.add_connection_to_group("room", b.connection_id)
        sdk.send_to_group("room", {"all": 1})
        sdk.send_to_group("room", "text", content_type="text/plain")
        sdk.send_to_group("room", b"\x02", content_type="application/octet-stream")
        for client in (a, b):
            assert await client.receive() == group_message("room", "json", {"all": 1})
            assert await client.receive() == group_message("room", "text", "text")
            assert await client.receive() == group_message("room", "binary", "Ag==")
        assert json.loads(await asyncio.wait_for(simple.recv(), TIMEOUT)) == {"all": 1}
        assert await asyncio.wait_for(simple.recv(), TIMEOUT) == "text"
        assert await asyncio.wait_for(simple.recv(), TIMEOUT) == b"\x02"

        sdk.send_to_group("room", "not a", content_type="text/plain", excluded=[a.connection_id])
        assert await b.receive() == group_message("room", "text", "not a")
        assert await asyncio.wait_for(simple.recv(), TIMEOUT) == "not a"
        sdk.send_to_group("room", "only u1", content_type="text/plain", filter="userId eq 'u1'")
        assert await a.receive() == group_message("room", "text", "only u1")
        await marker(sdk, a, b, outsider)
        sdk.send_to_group("empty-group", "nobody", content_type="text/plain")
    finally:
        await close_all([a, b, outsider, simple])


async def test_no_echo_skips_only_the_publishing_connection(
    service: ServiceThread, hub: str, sdk: WebPubSubServiceClient
) -> None:
    """``noEcho`` spares the sender's connection, not its user's other connections (spec 6)."""
    roles = [SEND]
    sender = await connect_json(service, hub, user_id="u", roles=roles, groups=["g"])
    same_user = await connect_json(service, hub, user_id="u", groups=["g"])
    try:
        assert (await sender.publish("g", "quiet", "text", no_echo=True))["success"] is True
        message = await same_user.receive()
        assert (message["data"], message["fromUserId"]) == ("quiet", "u")
        await marker(sdk, sender)
    finally:
        await close_all([sender, same_user])


async def test_rest_sends_never_echo_from_user(
    service: ServiceThread, hub: str, sdk: WebPubSubServiceClient
) -> None:
    """REST group sends carry no ``fromUserId`` (spec 4.4), client publishes do."""
    async with await connect_json(
        service, hub, user_id="pub", roles=[SEND], groups=["g"]
    ) as client:
        sdk.send_to_group("g", "from rest", content_type="text/plain")
        assert "fromUserId" not in await client.receive()
        assert (await client.publish("g", "from client", "text"))["success"] is True
        assert (await client.receive())["fromUserId"] == "pub"


# -- membership -----------------------------------------------------------------------------


async def test_add_and_remove_connection(
    service: ServiceThread, hub: str, sdk: WebPubSubServiceClient
) -> None:
    async with await connect_json(service, hub, user_id="c") as client:
        assert not sdk.group_exists("g1")
        sdk.add_connection_to_group("g1", client.connection_id)
        sdk.add_connection_to_group("g1", client.connection_id)  # idempotent
        sdk.add_connection_to_group("g2", client.connection_id)
        assert sdk.group_exists("g1") and sdk.group_exists("g2")
        sdk.send_to_group("g1", "in g1", content_type="text/plain")
        assert await client.receive() == group_message("g1", "text", "in g1")

        sdk.remove_connection_from_group("g1", client.connection_id)
        sdk.remove_connection_from_group("g1", client.connection_id)  # idempotent
        assert not sdk.group_exists("g1")
        sdk.send_to_group("g1", "gone", content_type="text/plain")
        await marker(sdk, client)

        sdk.remove_connection_from_all_groups(client.connection_id)
        assert not sdk.group_exists("g2")
        sdk.remove_connection_from_all_groups("no-such-connection")
        with pytest.raises(ResourceNotFoundError):
            sdk.add_connection_to_group("g1", "no-such-connection")
        assert not sdk.group_exists("g1")


async def test_add_and_remove_user(
    service: ServiceThread, hub: str, sdk: WebPubSubServiceClient
) -> None:
    first = await connect_json(service, hub, user_id="member")
    second = await connect_json(service, hub, user_id="member")
    other = await connect_json(service, hub, user_id="other")
    try:
        sdk.add_user_to_group("team", "member")
        sdk.add_user_to_group("extra", "member")
        members = {m.connection_id for m in sdk.list_connections(group="team")}
        assert members == {first.connection_id, second.connection_id}
        sdk.send_to_group("team", "hi team", content_type="text/plain")
        for client in (first, second):
            assert await client.receive() == group_message("team", "text", "hi team")
        await marker(sdk, other)

        # Groups attach to connections: a later connection of the user is not a member.
        third = await connect_json(service, hub, user_id="member")
        try:
            assert third.connection_id not in {
                m.connection_id for m in sdk.list_connections(group="team")
            }
        finally:
            await third.close()

        sdk.remove_user_from_group("team", "member")
        sdk.remove_user_from_group("team", "member")  # idempotent
        assert not sdk.group_exists("team")
        assert sdk.group_exists("extra")
        sdk.remove_user_from_all_groups("member")
        assert not sdk.group_exists("extra")
        sdk.remove_user_from_all_groups("nobody")
        with pytest.raises(ResourceNotFoundError):
            sdk.add_user_to_group("team", "nobody")
    finally:
        await close_all([first, second, other])


async def test_exists_true_and_false(
    service: ServiceThread, hub: str, sdk: WebPubSubServiceClient
) -> None:
    assert not sdk.connection_exists("nope")
    assert not sdk.user_exists("alice")
    assert not sdk.group_exists("room")
    async with await connect_json(service, hub, user_id="alice", groups=["room"]) as client:
        assert sdk.connection_exists(client.connection_id)
        assert sdk.user_exists("alice")
        assert sdk.group_exists("room")
        assert not sdk.user_exists("Alice")  # user ids are case-sensitive
        assert not sdk.group_exists("Room")  # so are group names
    await async_wait_until(lambda: not sdk.user_exists("alice"), "alice to leave")
    assert not sdk.group_exists("room")


# -- closing ----------------------------------------------------------------------------------


async def assert_closed_with_reason(client: JsonClient, reason: str) -> None:
    code, _, frames = await client.until_closed()
    assert frames == [{"type": "system", "event": "disconnected", "message": reason}]
    assert code in (1000, 1008)  # spec 4.10: 1000 acceptable for non-reliable connections


async def test_close_connection(
    service: ServiceThread, hub: str, sdk: WebPubSubServiceClient
) -> None:
    a = await connect_json(service, hub, user_id="same")
    b = await connect_json(service, hub, user_id="same")
    try:
        sdk.close_connection(a.connection_id, reason="kicked out")
        await assert_closed_with_reason(a, "kicked out")
        assert not sdk.connection_exists(a.connection_id)
        assert sdk.user_exists("same")
        await marker(sdk, b)
        sdk.close_connection("no-such-connection", reason="nothing")

        reason = "ünïcödé reason " * 20  # longer than a close frame can carry
        sdk.close_connection(b.connection_id, reason=reason)
        await assert_closed_with_reason(b, reason)
    finally:
        await close_all([a, b])


async def test_close_user_connections(
    service: ServiceThread, hub: str, sdk: WebPubSubServiceClient
) -> None:
    a1 = await connect_json(service, hub, user_id="u1")
    a2 = await connect_json(service, hub, user_id="u1")
    a3 = await connect_json(service, hub, user_id="u1")
    b = await connect_json(service, hub, user_id="u2")
    try:
        sdk.close_user_connections("u1", reason="user kicked", excluded=[a3.connection_id])
        for client in (a1, a2):
            await assert_closed_with_reason(client, "user kicked")
        assert sdk.connection_exists(a3.connection_id)
        await marker(sdk, a3, b)
    finally:
        await close_all([a1, a2, a3, b])


async def test_close_group_connections(
    service: ServiceThread, hub: str, sdk: WebPubSubServiceClient
) -> None:
    members = [await connect_json(service, hub, groups=["room"]) for _ in range(3)]
    outsider = await connect_json(service, hub)
    try:
        keep = members[2]
        sdk.close_group_connections("room", reason="bye group", excluded=[keep.connection_id])
        for client in members[:2]:
            await assert_closed_with_reason(client, "bye group")
        assert {m.connection_id for m in sdk.list_connections(group="room")} == {keep.connection_id}
        await marker(sdk, keep, outsider)
    finally:
        await close_all([*members, outsider])


async def test_close_all_connections(
    service: ServiceThread, hub: str, sdk: WebPubSubServiceClient
) -> None:
    clients = [await connect_json(service, hub, user_id=f"u{i}") for i in range(3)]
    simple = await connect_raw(service, hub, user_id="simple")
    try:
        keep = clients[0]
        sdk.close_all_connections(reason="all gone", excluded=[keep.connection_id])
        for client in clients[1:]:
            await assert_closed_with_reason(client, "all gone")
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(simple.recv(), TIMEOUT)
        assert simple.protocol.close_rcvd is not None
        assert simple.protocol.close_rcvd.reason == "all gone"
        assert hub_snapshot(service, hub).connections == {keep.connection_id}
        await marker(sdk, keep)
        sdk.close_all_connections()
    finally:
        await close_all([*clients, simple])


# -- permissions ------------------------------------------------------------------------------


async def test_grant_revoke_has_permission(
    service: ServiceThread, hub: str, sdk: WebPubSubServiceClient
) -> None:
    listener = await connect_json(service, hub, groups=["room"])
    client = await connect_json(service, hub, user_id="p")
    cid = client.connection_id
    try:
        for permission in ("joinLeaveGroup", "sendToGroup"):
            assert not sdk.has_permission(permission, cid, target_name="room")
        assert (await client.join("room"))["error"]["name"] == "Forbidden"
        assert (await client.publish("room", "x", "text"))["error"]["name"] == "Forbidden"

        sdk.grant_permission("joinLeaveGroup", cid, target_name="room")
        sdk.grant_permission("sendToGroup", cid, target_name="room")
        assert sdk.has_permission("joinLeaveGroup", cid, target_name="room")
        assert sdk.has_permission("sendToGroup", cid, target_name="room")
        assert not sdk.has_permission("sendToGroup", cid, target_name="other")
        assert (await client.join("room"))["success"] is True
        assert (await client.publish("room", "granted", "text", no_echo=True))["success"] is True
        message = await listener.receive()
        assert (message["data"], message["fromUserId"]) == ("granted", "p")

        sdk.revoke_permission("sendToGroup", cid, target_name="room")
        assert not sdk.has_permission("sendToGroup", cid, target_name="room")
        assert sdk.has_permission("joinLeaveGroup", cid, target_name="room")
        assert (await client.publish("room", "x", "text"))["error"]["name"] == "Forbidden"
        sdk.revoke_permission("joinLeaveGroup", cid, target_name="room")
        assert (await client.leave("room"))["error"]["name"] == "Forbidden"

        assert not sdk.has_permission("sendToGroup", "no-such-connection", target_name="room")
        with pytest.raises(ResourceNotFoundError):
            sdk.grant_permission("sendToGroup", "no-such-connection", target_name="room")
        sdk.revoke_permission("sendToGroup", "no-such-connection", target_name="room")
    finally:
        await close_all([listener, client])


# -- listing ----------------------------------------------------------------------------------


async def test_list_connections_pages(
    service: ServiceThread, hub: str, sdk: WebPubSubServiceClient
) -> None:
    users = ["a", "b", None, "c", None]
    clients = [await connect_json(service, hub, user_id=u, groups=["room"]) for u in users]
    try:
        expected = {(c.connection_id, c.user_id) for c in clients}
        listed = list(sdk.list_connections(group="room", maxpagesize=2))
        assert len(listed) == 5
        assert {(m.connection_id, m.user_id) for m in listed} == expected
        pages = [list(page) for page in sdk.list_connections(group="room", maxpagesize=2).by_page()]
        assert [len(page) for page in pages] == [2, 2, 1]
        top = list(sdk.list_connections(group="room", top=3, maxpagesize=2))
        assert len(top) == 3 and {(m.connection_id, m.user_id) for m in top} <= expected
        assert list(sdk.list_connections(group="missing")) == []
    finally:
        await close_all(clients)


async def test_list_connections_more_than_default_page(
    service: ServiceThread, hub: str, sdk: WebPubSubServiceClient
) -> None:
    """205 members: the SDK's default request gets a 200-item page and follows ``nextLink``."""
    token = sdk.get_client_access_token(groups=["crowd"])["token"]
    url = client_url(service, hub, token=token)
    crowd = await asyncio.gather(*(connect(url, open_timeout=TIMEOUT) for _ in range(205)))
    try:
        await async_wait_until(
            lambda: len(hub_snapshot(service, hub).groups.get("crowd", ())) == 205, "205 members"
        )
        pages = [list(page) for page in sdk.list_connections(group="crowd").by_page()]
        assert [len(page) for page in pages] == [200, 5]
        ids = {m.connection_id for page in pages for m in page}
        assert ids == hub_snapshot(service, hub).groups["crowd"]
    finally:
        await close_all(crowd)


async def test_special_characters_in_names(service: ServiceThread, hub: str) -> None:
    """Hub names with ``.[]`,``; user ids and groups with spaces, ``/`` and non-ASCII."""
    special_hub = f"{hub}.v1[`,]"
    user, group = "ü ser/1", "a/b c%d"
    with WebPubSubServiceClient.from_connection_string(
        service.connection_string, hub=special_hub
    ) as sdk:
        client, _ = await connect_with_sdk_token(sdk, user_id=user, groups=[group])
        try:
            assert client.user_id == user
            assert sdk.user_exists(user) and sdk.group_exists(group)
            sdk.send_to_user(user, "to user", content_type="text/plain")
            assert await client.receive() == server_message("text", "to user")
            sdk.send_to_group(group, "to group", content_type="text/plain")
            assert await client.receive() == group_message(group, "text", "to group")
            assert [m.user_id for m in sdk.list_connections(group=group)] == [user]
            sdk.remove_user_from_group(group, user)
            assert not sdk.group_exists(group)
            sdk.close_user_connections(user, reason="bye ü")
            await assert_closed_with_reason(client, "bye ü")
        finally:
            await client.close()


# -- client access tokens -----------------------------------------------------------------------


async def test_client_access_token_with_user_roles_groups(
    service: ServiceThread, hub: str, sdk: WebPubSubServiceClient
) -> None:
    client, access = await connect_with_sdk_token(
        sdk,
        user_id="tok-user",
        roles=[f"{JOIN}.room", SEND],
        groups=["room", "lobby"],
        minutes_to_expire=5,
    )
    try:
        port = service.settings.port
        assert access["baseUrl"] == f"ws://127.0.0.1:{port}/client/hubs/{hub}"
        assert access["url"] == f"{access['baseUrl']}?access_token={access['token']}"
        claims = jwt.decode(
            access["token"],
            ACCESS_KEY,
            algorithms=["HS256"],
            audience=f"http://127.0.0.1:{port}/client/hubs/{hub}",
        )
        assert claims["sub"] == "tok-user"
        assert claims["exp"] - claims["iat"] == 300
        assert client.user_id == "tok-user"
        assert client.ws.subprotocol == JSON_SUBPROTOCOL
        assert sdk.group_exists("room") and sdk.group_exists("lobby")
        assert sdk.has_permission("sendToGroup", client.connection_id, target_name="any")
        assert sdk.has_permission("joinLeaveGroup", client.connection_id, target_name="room")
        assert not sdk.has_permission("joinLeaveGroup", client.connection_id, target_name="x")
        assert (await client.publish("lobby", {"via": "token"}))["success"] is True
        message = await client.receive()
        assert message["group"] == "lobby" and message["fromUserId"] == "tok-user"
        assert (await client.leave("room"))["success"] is True
        assert (await client.leave("lobby"))["error"]["name"] == "Forbidden"
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("protocol", "path"),
    [
        ("Default", "client/hubs"),
        ("MQTT", "clients/mqtt/hubs"),
        ("SocketIO", "clients/socketio/hubs"),
        ("mqtt", "clients/mqtt/hubs"),
    ],
)
def test_client_access_token_urls(
    service: ServiceThread, hub: str, sdk: WebPubSubServiceClient, protocol: str, path: str
) -> None:
    access = sdk.get_client_access_token(client_protocol=protocol, user_id="x")
    port = service.settings.port
    assert access["baseUrl"] == f"ws://127.0.0.1:{port}/{path}/{hub}"
    claims = jwt.decode(
        access["token"],
        ACCESS_KEY,
        algorithms=["HS256"],
        audience=f"http://127.0.0.1:{port}/{path}/{hub}",
    )
    assert claims["sub"] == "x"


# -- connection strings, keys, hub casing ---------------------------------------------------


def connection_string_forms(service: ServiceThread, key: str = ACCESS_KEY) -> dict[str, str]:
    port = service.settings.port
    return {
        "port_key": f"Endpoint=http://127.0.0.1;Port={port};AccessKey={key};Version=1.0;",
        "trailing_slash": f"Endpoint=http://127.0.0.1:{port}/;AccessKey={key};Version=1.0;",
        "plain": f"Endpoint=http://127.0.0.1:{port};AccessKey={key};Version=1.0;",
        "lower_keys": f"endpoint=http://127.0.0.1:{port};accesskey={key};version=1.0",
        "localhost": f"Endpoint=http://localhost:{port};AccessKey={key};Version=1.0;",
        "upper_host_port_key": f"Endpoint=http://LOCALHOST;Port={port};AccessKey={key};Version=1.0;",
        "printed": service.connection_string,
    }


@pytest.mark.parametrize(
    "form",
    [
        "port_key",
        "trailing_slash",
        "plain",
        "lower_keys",
        "localhost",
        "upper_host_port_key",
        "printed",
    ],
)
async def test_connection_string_forms(service: ServiceThread, hub: str, form: str) -> None:
    connection_string = connection_string_forms(service)[form]
    with WebPubSubServiceClient.from_connection_string(connection_string, hub=hub) as sdk:
        client, access = await connect_with_sdk_token(sdk, user_id="cs")
        try:
            assert "//client" not in access["url"]
            assert sdk.user_exists("cs")
            assert sdk.connection_exists(client.connection_id)
            sdk.send_to_user("cs", {"form": form})
            assert await client.receive() == server_message("json", {"form": form})
            second, _ = await connect_with_sdk_token(sdk, user_id="cs")
            try:
                sdk.add_user_to_group("g", "cs")
                pages = list(sdk.list_connections(group="g", maxpagesize=1).by_page())
                assert [[m.user_id for m in page] for page in pages] == [["cs"], ["cs"]]
            finally:
                await second.close()
        finally:
            await client.close()


async def test_secondary_key(service: ServiceThread, hub: str) -> None:
    connection_string = connection_string_forms(service, SECONDARY_KEY)["plain"]
    with WebPubSubServiceClient.from_connection_string(connection_string, hub=hub) as sdk:
        client, access = await connect_with_sdk_token(sdk, user_id="second")
        try:
            jwt.decode(
                access["token"], SECONDARY_KEY, algorithms=["HS256"], audience=jwt_aud(access)
            )
            assert sdk.user_exists("second")
            sdk.send_to_connection(client.connection_id, "ok", content_type="text/plain")
            assert await client.receive() == server_message("text", "ok")
        finally:
            await client.close()


def jwt_aud(access: dict[str, Any]) -> str:
    return "http" + access["baseUrl"][len("ws") :]


def test_wrong_key_is_rejected(service: ServiceThread, hub: str) -> None:
    connection_string = connection_string_forms(service, "wrong-key-0123456789abcdefghijklmnopqrs")
    with WebPubSubServiceClient.from_connection_string(connection_string["plain"], hub=hub) as sdk:
        with pytest.raises(ClientAuthenticationError):
            sdk.send_to_all({"x": 1})
        with pytest.raises(ClientAuthenticationError):
            sdk.user_exists("x")


async def test_hub_name_casing(service: ServiceThread, hub: str) -> None:
    """``Chat`` and ``chat`` are the same hub, for REST and for clients."""
    upper, lower = hub.upper(), hub.lower()
    cs = service.connection_string
    with (
        WebPubSubServiceClient.from_connection_string(cs, hub=upper) as sdk_upper,
        WebPubSubServiceClient.from_connection_string(cs, hub=lower) as sdk_lower,
    ):
        on_lower, _ = await connect_with_sdk_token(sdk_lower, user_id="lo", groups=["g"])
        on_upper, access = await connect_with_sdk_token(sdk_upper, user_id="up")
        try:
            assert f"/client/hubs/{upper}" in access["baseUrl"]
            assert sdk_upper.user_exists("lo") and sdk_lower.user_exists("up")
            assert sdk_upper.group_exists("g")
            sdk_upper.send_to_all("to everyone", content_type="text/plain")
            for client in (on_lower, on_upper):
                assert await client.receive() == server_message("text", "to everyone")
            sdk_upper.add_user_to_group("g", "up")
            assert {m.user_id for m in sdk_lower.list_connections(group="g")} == {"lo", "up"}
            sdk_lower.close_all_connections(reason="case")
            for client in (on_lower, on_upper):
                await assert_closed_with_reason(client, "case")
        finally:
            await close_all([on_lower, on_upper])


# -- the official client (azure-messaging-webpubsubclient) -----------------------------------


@dataclass
class OfficialClient:
    """The official sync client with every callback recorded in thread-safe queues.

    ``messages`` holds group and server messages in arrival order, so a marker sent last
    proves nothing else arrived before it.
    """

    client: WebPubSubClient
    connected: queue.Queue[OnConnectedArgs] = field(default_factory=queue.Queue)
    disconnected: queue.Queue[OnDisconnectedArgs] = field(default_factory=queue.Queue)
    stopped: queue.Queue[None] = field(default_factory=queue.Queue)
    messages: queue.Queue[OnGroupDataMessageArgs | OnServerDataMessageArgs] = field(
        default_factory=queue.Queue
    )

    @classmethod
    def create(cls, url: str) -> OfficialClient:
        client = WebPubSubClient(
            url,
            protocol_type=WebPubSubProtocolType.JSON,
            reconnect_retry_total=0,
            message_retry_total=0,
            auto_rejoin_groups=False,
            ack_timeout=OFFICIAL_ACK_TIMEOUT,
            start_timeout=OFFICIAL_START_TIMEOUT,
        )
        recorder = cls(client)
        client.subscribe(CallbackType.CONNECTED, recorder.connected.put)
        client.subscribe(CallbackType.DISCONNECTED, recorder.disconnected.put)
        client.subscribe(CallbackType.STOPPED, lambda: recorder.stopped.put(None))
        client.subscribe(CallbackType.GROUP_MESSAGE, recorder.messages.put)
        client.subscribe(CallbackType.SERVER_MESSAGE, recorder.messages.put)
        return recorder

    def open(self) -> OnConnectedArgs:
        self.client.open()
        return self.connected.get(timeout=TIMEOUT)

    def next_message(self) -> OnGroupDataMessageArgs | OnServerDataMessageArgs:
        return self.messages.get(timeout=TIMEOUT)

    def next_group_message(self) -> OnGroupDataMessageArgs:
        message = self.next_message()
        assert isinstance(message, OnGroupDataMessageArgs), vars(message)
        return message

    def next_server_message(self) -> OnServerDataMessageArgs:
        message = self.next_message()
        assert isinstance(message, OnServerDataMessageArgs), vars(message)
        return message

    def expect_marker(self, sdk: WebPubSubServiceClient, connection_id: str) -> None:
        text = f"marker-{time.monotonic_ns()}"
        sdk.send_to_connection(connection_id, text, content_type="text/plain")
        message = self.next_message()
        assert isinstance(message, OnServerDataMessageArgs), vars(message)
        assert message.data == text

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def official(sdk: WebPubSubServiceClient) -> Iterator[Any]:
    """Factory of opened official clients for this hub; all closed at the end."""
    opened: list[OfficialClient] = []

    def make(**token_args: Any) -> tuple[OfficialClient, OnConnectedArgs]:
        url = sdk.get_client_access_token(**token_args)["url"]
        recorder = OfficialClient.create(url)
        connected = recorder.open()
        opened.append(recorder)
        return recorder, connected

    yield make
    for recorder in opened:
        recorder.close()


def test_official_client_connected_and_disconnected(
    hub: str, sdk: WebPubSubServiceClient, official: Any
) -> None:
    alice, connected = official(user_id="alice")
    assert connected.user_id == "alice"
    assert sdk.connection_exists(connected.connection_id)
    assert alice.client.is_connected()

    sdk.close_connection(connected.connection_id, reason="bye alice")
    disconnected = alice.disconnected.get(timeout=TIMEOUT)
    assert disconnected.connection_id == connected.connection_id
    assert disconnected.message == "bye alice"
    alice.stopped.get(timeout=TIMEOUT)
    assert not sdk.connection_exists(connected.connection_id)

    anonymous, connected = official()
    assert connected.user_id is None
    anonymous.close()
    assert anonymous.disconnected.get(timeout=TIMEOUT).connection_id == connected.connection_id
    anonymous.stopped.get(timeout=TIMEOUT)
    wait_until(lambda: not sdk.connection_exists(connected.connection_id), "client close")


def test_official_client_group_messages(
    hub: str, sdk: WebPubSubServiceClient, official: Any
) -> None:
    roles = [JOIN, SEND]
    alice, alice_info = official(user_id="alice", roles=roles)
    bob, bob_info = official(user_id="bob", roles=roles)
    alice.client.join_group("room")
    bob.client.join_group("room")
    bob.client.join_group("room")  # joining twice is fine
    assert {m.user_id for m in sdk.list_connections(group="room")} == {"alice", "bob"}

    alice.client.send_to_group("room", {"hi": 1}, WebPubSubDataType.JSON)
    alice.client.send_to_group("room", "plain", WebPubSubDataType.TEXT, no_echo=True)
    alice.client.send_to_group(
        "room", memoryview(b"\x01\x02\x03"), WebPubSubDataType.BINARY, ack=False
    )
    for recorder, echoed in ((bob, True), (alice, False)):
        message = recorder.next_group_message()
        assert (message.group, message.from_user_id) == ("room", "alice")
        assert (message.data_type, message.data) == ("json", {"hi": 1})
        if echoed:  # no_echo skipped only the publishing connection
            message = recorder.next_group_message()
            assert (message.data_type, message.data) == ("text", "plain")
        message = recorder.next_group_message()
        assert message.data_type == "binary"
        assert bytes(message.data) == b"\x01\x02\x03"

    # A repeated ackId is acked "Duplicate", which the client treats as success, and the
    # message is not delivered twice.
    alice.client.send_to_group("room", "once", WebPubSubDataType.TEXT, ack_id=1000)
    alice.client.send_to_group("room", "once", WebPubSubDataType.TEXT, ack_id=1000)
    for recorder in (alice, bob):
        assert recorder.next_group_message().data == "once"

    bob.client.leave_group("room")
    alice.client.send_to_group("room", "after leave", WebPubSubDataType.TEXT)
    assert alice.next_group_message().data == "after leave"
    bob.expect_marker(sdk, bob_info.connection_id)
    alice.expect_marker(sdk, alice_info.connection_id)
    assert [m.user_id for m in sdk.list_connections(group="room")] == ["alice"]


def test_official_client_server_messages(
    hub: str, sdk: WebPubSubServiceClient, official: Any
) -> None:
    carol, info = official(user_id="carol")
    sdk.send_to_all({"k": "v"})
    sdk.send_to_user("carol", "text for carol", content_type="text/plain")
    sdk.send_to_connection(info.connection_id, b"\x00\xff", content_type="application/octet-stream")
    first = carol.next_server_message()
    assert (first.data_type, first.data) == ("json", {"k": "v"})
    second = carol.next_server_message()
    assert (second.data_type, second.data) == ("text", "text for carol")
    third = carol.next_server_message()
    assert third.data_type == "binary" and bytes(third.data) == b"\x00\xff"


def test_official_client_send_event_without_upstream(
    hub: str, sdk: WebPubSubServiceClient, official: Any
) -> None:
    """No event handler exists: the ack reports an error and the connection stays usable."""
    dave, info = official(user_id="dave")
    with pytest.raises(SendMessageError) as raised:
        dave.client.send_event("myevent", {"e": 1}, WebPubSubDataType.JSON)
    assert raised.value.error_detail is not None
    assert raised.value.error_detail.name == "InternalServerError"
    assert raised.value.error_detail.message
    dave.client.send_event("fire", "and forget", WebPubSubDataType.TEXT, ack=False)
    assert dave.client.is_connected()
    dave.expect_marker(sdk, info.connection_id)


def test_official_client_forbidden_until_granted(
    hub: str, sdk: WebPubSubServiceClient, official: Any
) -> None:
    erin, info = official(user_id="erin")
    with pytest.raises(SendMessageError) as raised:
        erin.client.join_group("vip")
    assert raised.value.error_detail is not None
    assert raised.value.error_detail.name == "Forbidden"
    with pytest.raises(SendMessageError):
        erin.client.send_to_group("vip", "x", WebPubSubDataType.TEXT)
    sdk.grant_permission("joinLeaveGroup", info.connection_id, target_name="vip")
    erin.client.join_group("vip")
    assert sdk.group_exists("vip")
    sdk.send_to_group("vip", "welcome", content_type="text/plain")
    message = erin.next_group_message()
    assert (message.group, message.data, message.from_user_id) == ("vip", "welcome", None)


@pytest.mark.parametrize("form", ["port_key", "trailing_slash", "localhost"])
def test_official_client_with_connection_string_forms(
    service: ServiceThread, hub: str, form: str
) -> None:
    connection_string = connection_string_forms(service)[form]
    with WebPubSubServiceClient.from_connection_string(connection_string, hub=hub) as sdk:
        url = sdk.get_client_access_token(user_id="frank", roles=[JOIN, SEND])["url"]
        frank = OfficialClient.create(url)
        info = frank.open()
        try:
            frank.client.join_group("g")
            frank.client.send_to_group("g", "self", WebPubSubDataType.TEXT)
            assert frank.next_group_message().data == "self"
            frank.expect_marker(sdk, info.connection_id)
        finally:
            frank.close()
