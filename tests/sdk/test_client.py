"""Every call of the SDK against the real service, for the sync and the asyncio client.

Each test body is written once and runs for both flavours (the ``kind`` fixture); effects are
observed through WebSocket clients and the SDK's own checks, never by sleeping. A message
that must *not* arrive is proven absent by sending a marker afterwards: the next frame the
client reads must be the marker.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import jwt
import pytest

import webpubsub
import webpubsub.aio
from webpubsub import (
    AzureKeyCredential,
    ClientAuthenticationError,
    HttpResponseError,
    Permission,
    RawResponse,
    ResourceNotFoundError,
    odata,
)
from webpubsub.testing import ServiceThread

from ..conftest import ACCESS_KEY, SECONDARY_KEY
from .helpers import WsClient, collect, poll

pytestmark = pytest.mark.timeout(30)


async def expect_data(ws: WsClient, data_type: str, data: Any, group: str | None = None) -> None:
    """The next message is ``data``; REST group sends arrive ``from: group`` (spec 4.4)."""
    message = await ws.receive()
    assert message["type"] == "message", message
    if group is None:
        assert message["from"] == "server", message
    else:
        assert (message["from"], message["group"]) == ("group", group), message
    assert (message["dataType"], message["data"]) == (data_type, data)


async def expect_marker(client: Any, ws: WsClient, marker: str) -> None:
    """The next message ``ws`` gets is ``marker`` (so nothing was delivered before it)."""
    await client.send_to_connection(ws.connection_id, marker, content_type="text/plain")
    await expect_data(ws, "text", marker)


# -- sending ----------------------------------------------------------------------------


async def test_send_to_all_body_types(client: Any) -> None:
    ws = await WsClient.connect(client)
    await client.send_to_all({"message": "Hello world!"})
    await expect_data(ws, "json", {"message": "Hello world!"})
    await client.send_to_all(["a", 1, None])
    await expect_data(ws, "json", ["a", 1, None])
    await client.send_to_all("Hi there!")  # a str is JSON unless told otherwise
    await expect_data(ws, "json", "Hi there!")
    await client.send_to_all("Hi there!", content_type="text/plain")
    await expect_data(ws, "text", "Hi there!")
    payload = bytes(range(10))
    b64 = base64.b64encode(payload).decode()
    for binary in (payload, bytearray(payload), memoryview(payload), io.BytesIO(payload)):
        await client.send_to_all(binary)
        await expect_data(ws, "binary", b64)
    await client.send_to_all(b'{"raw":true}', content_type="application/json")
    await expect_data(ws, "json", {"raw": True})
    await client.send_to_all("text as bytes", content_type="application/octet-stream")
    await expect_data(ws, "binary", base64.b64encode(b"text as bytes").decode())
    await ws.close()


async def test_send_rejects_what_it_cannot_encode(client: Any) -> None:
    with pytest.raises(TypeError, match="JSON"):
        await client.send_to_all(object())
    with pytest.raises(TypeError):
        await client.send_to_all({"a": 1}, content_type="text/plain")
    with pytest.raises(ValueError, match="content_type"):
        await client.send_to_all("x", content_type="image/png")
    with pytest.raises(ValueError):
        await client.send_to_all("x", message_ttl_seconds=-1)


async def test_async_file_like_message(make_client: Any, service: ServiceThread, hub: str) -> None:
    if make_client.kind == "sync":
        pytest.skip("awaitable read() is an asyncio-client feature")

    class AsyncFile:
        async def read(self) -> bytes:
            return b"\x00\xff"

    client = make_client(service.connection_string, hub=hub)
    ws = await WsClient.connect(client)
    await client.send_to_all(AsyncFile())
    await expect_data(ws, "binary", base64.b64encode(b"\x00\xff").decode())
    await ws.close()


async def test_send_to_all_excluded_filter_and_ttl(client: Any) -> None:
    alice = await WsClient.connect(client, user_id="alice")
    bob = await WsClient.connect(client, user_id="bob's")
    await client.send_to_all({"n": 1}, excluded=[alice.connection_id])
    await expect_data(bob, "json", {"n": 1})
    await expect_marker(client, alice, "m1")

    await client.send_to_all({"n": 2}, filter=odata("userId eq {}", "bob's"))
    await expect_data(bob, "json", {"n": 2})
    await expect_marker(client, alice, "m2")

    await client.send_to_all({"n": 3}, message_ttl_seconds=30)
    await expect_data(alice, "json", {"n": 3})
    await expect_data(bob, "json", {"n": 3})

    with pytest.raises(HttpResponseError) as info:
        await client.send_to_all({"n": 4}, filter="userId eq")
    assert info.value.status_code == 400
    with pytest.raises(HttpResponseError) as info:
        await client.send_to_all({"n": 5}, message_ttl_seconds=301)
    assert info.value.status_code == 400
    await alice.close()
    await bob.close()


async def test_send_to_user(client: Any) -> None:
    first = await WsClient.connect(client, user_id="user 1")
    second = await WsClient.connect(client, user_id="user 1")
    other = await WsClient.connect(client, user_id="user 2")
    await client.send_to_user("user 1", {"message": "Hello world!"})
    await client.send_to_user("user 1", "Hi there!", content_type="text/plain")
    await client.send_to_user("user 1", bytes(10))
    for ws in (first, second):
        await expect_data(ws, "json", {"message": "Hello world!"})
        await expect_data(ws, "text", "Hi there!")
        await expect_data(ws, "binary", base64.b64encode(bytes(10)).decode())
    await expect_marker(client, other, "none for user 2")

    await client.send_to_user(
        "user 1", "filtered", filter=odata("connectionId ne {}", first.connection_id)
    )
    await expect_data(second, "json", "filtered")
    await expect_marker(client, first, "filtered out")
    await client.send_to_user("nobody", {"x": 1})  # unknown users are not an error (202)
    for ws in (first, second, other):
        await ws.close()


async def test_send_to_connection(client: Any) -> None:
    target = await WsClient.connect(client)
    other = await WsClient.connect(client)
    await client.send_to_connection(target.connection_id, {"to": "you"})
    await client.send_to_connection(target.connection_id, b"\x01", message_ttl_seconds=10)
    await expect_data(target, "json", {"to": "you"})
    await expect_data(target, "binary", "AQ==")
    await expect_marker(client, other, "not you")
    await target.close()
    await other.close()


# -- groups -----------------------------------------------------------------------------


async def test_group_membership_and_send(client: Any) -> None:
    user = await WsClient.connect(client, user_id="user1")
    conn = await WsClient.connect(client, user_id="user2")
    outsider = await WsClient.connect(client, user_id="user3")
    group = client.group("room 1/a")  # spaces and slashes travel percent-encoded
    assert not await client.group_exists("room 1/a")

    await group.add_user("user1")
    await group.add_connection(conn.connection_id)
    assert await client.group_exists("room 1/a")
    members = await collect(group.list_connections())
    assert sorted((m.connection_id, m.user_id) for m in members) == sorted(
        [(user.connection_id, "user1"), (conn.connection_id, "user2")]
    )

    await group.send_to_all({"message": "Hello world!"})
    await group.send_to_all("Hi there!", content_type="text/plain")
    await group.send_to_all(bytes(10))
    for ws in (user, conn):
        await expect_data(ws, "json", {"message": "Hello world!"}, "room 1/a")
        await expect_data(ws, "text", "Hi there!", "room 1/a")
        await expect_data(ws, "binary", base64.b64encode(bytes(10)).decode(), "room 1/a")
    await expect_marker(client, outsider, "outside")

    await group.send_to_all("ex", excluded=[user.connection_id])
    await expect_data(conn, "json", "ex", "room 1/a")
    await expect_marker(client, user, "excluded")
    await group.send_to_all("flt", filter=odata("userId eq {}", "user1"))
    await expect_data(user, "json", "flt", "room 1/a")
    await expect_marker(client, conn, "filtered")

    await group.remove_user("user1")
    await group.remove_connection(conn.connection_id)
    assert not await client.group_exists("room 1/a")
    assert await collect(group.list_connections()) == []
    for ws in (user, conn, outsider):
        await ws.close()


async def test_add_unknown_user_or_connection_is_not_found(client: Any) -> None:
    group = client.group("g")
    with pytest.raises(ResourceNotFoundError) as info:
        await group.add_user("ghost")
    assert info.value.status_code == 404
    assert info.value.error_code == "Error.User.NotExisted"
    with pytest.raises(ResourceNotFoundError) as info:
        await group.add_connection("ghost-connection")
    assert info.value.error_code == "Error.Connection.NotExisted"
    assert "ghost-connection" in info.value.message
    # Removing what is not there is fine (204).
    await group.remove_user("ghost")
    await group.remove_connection("ghost-connection")


async def test_exists_checks(client: Any) -> None:
    ws = await WsClient.connect(client, user_id="here", groups=["joined"])
    assert await client.connection_exists(ws.connection_id)
    assert await client.user_exists("here")
    assert await client.group_exists("joined")
    assert not await client.connection_exists("missing-connection")
    assert not await client.user_exists("missing-user")
    assert not await client.group_exists("missing-group")
    await ws.close()
    await poll(lambda: _not(client.connection_exists(ws.connection_id)))


async def _not(awaitable: Any) -> bool:
    return not await awaitable


async def test_connections_to_groups_by_filter(client: Any) -> None:
    a1 = await WsClient.connect(client, user_id="a")
    a2 = await WsClient.connect(client, user_id="a")
    b = await WsClient.connect(client, user_id="b")
    await client.add_connections_to_groups(["g1", "g2"], odata("userId eq {}", "a"))
    for name in ("g1", "g2"):
        members = await collect(client.group(name).list_connections())
        assert {m.connection_id for m in members} == {a1.connection_id, a2.connection_id}
    await client.remove_connections_from_groups(
        ["g1"], odata("connectionId eq {}", a1.connection_id)
    )
    members = await collect(client.group("g1").list_connections())
    assert [m.connection_id for m in members] == [a2.connection_id]
    await client.remove_connections_from_groups(["g1", "g2"], "")  # empty filter: everyone
    assert not await client.group_exists("g1")
    assert not await client.group_exists("g2")
    with pytest.raises(HttpResponseError) as info:
        await client.add_connections_to_groups(["g1"], "userId eq eq")
    assert info.value.status_code == 400
    with pytest.raises(ValueError):
        await client.add_connections_to_groups([], "")
    with pytest.raises(TypeError):
        await client.add_connections_to_groups("g1", "")
    for ws in (a1, a2, b):
        await ws.close()


async def test_remove_from_all_groups(client: Any) -> None:
    ws1 = await WsClient.connect(client, user_id="u", groups=["x", "y"])
    ws2 = await WsClient.connect(client, user_id="v", groups=["x", "z"])
    await client.remove_user_from_all_groups("u")
    assert [m.connection_id for m in await collect(client.group("x").list_connections())] == [
        ws2.connection_id
    ]
    assert not await client.group_exists("y")
    await client.remove_connection_from_all_groups(ws2.connection_id)
    assert not await client.group_exists("x")
    assert not await client.group_exists("z")
    await ws1.close()
    await ws2.close()


# -- closing ----------------------------------------------------------------------------


async def test_close_connection(client: Any) -> None:
    ws = await WsClient.connect(client)
    await client.close_connection(ws.connection_id, reason="kicked")
    assert await ws.wait_closed() == "kicked"
    assert not await client.connection_exists(ws.connection_id)
    await client.close_connection("already-gone")  # 204 even when absent


async def test_close_user_connections(client: Any) -> None:
    keep = await WsClient.connect(client, user_id="u1")
    drop = await WsClient.connect(client, user_id="u1")
    await client.close_user_connections("u1", excluded=[keep.connection_id], reason="bye")
    assert await drop.wait_closed() == "bye"
    assert await client.connection_exists(keep.connection_id)
    await client.close_user_connections("u1")
    await keep.wait_closed()
    assert not await client.user_exists("u1")


async def test_close_all_connections(client: Any) -> None:
    keep = await WsClient.connect(client)
    drops = [await WsClient.connect(client) for _ in range(2)]
    await client.close_all_connections(excluded=[keep.connection_id], reason="all gone")
    for ws in drops:
        assert await ws.wait_closed() == "all gone"
    assert await client.connection_exists(keep.connection_id)
    await client.close_all_connections()
    await keep.wait_closed()


async def test_group_close_all_connections(client: Any) -> None:
    """The seed's "check if the group has any connection" example."""
    inside = [await WsClient.connect(client, groups=["room"]) for _ in range(3)]
    outside = await WsClient.connect(client)
    group = client.group("room")
    await group.close_all_connections(excluded=[inside[0].connection_id], reason="closing")
    for ws in inside[1:]:
        assert await ws.wait_closed() == "closing"
    assert await client.group_exists("room")
    await group.close_all_connections(reason="<closeReason>")
    await inside[0].wait_closed()
    assert not await client.group_exists("room")
    assert await client.connection_exists(outside.connection_id)
    await outside.close()


# -- permissions ------------------------------------------------------------------------


async def test_permissions(client: Any) -> None:
    ws = await WsClient.connect(client)
    cid = ws.connection_id
    assert not await client.has_permission("sendToGroup", cid, "room1")
    await client.grant_permission("sendToGroup", cid, target_name="room1")
    assert await client.has_permission("sendToGroup", cid, "room1")
    assert await client.has_permission(Permission.SEND_TO_GROUP, cid, target_name="room1")
    assert not await client.has_permission("sendToGroup", cid, "room2")
    await client.revoke_permission(Permission.SEND_TO_GROUP, cid, target_name="room1")
    assert not await client.has_permission("sendToGroup", cid, "room1")

    await client.grant_permission(Permission.JOIN_LEAVE_GROUP, cid)  # every group
    assert await client.has_permission("joinleavegroup", cid, "any")
    await client.revoke_permission("joinLeaveGroup", cid)
    assert not await client.has_permission("joinLeaveGroup", cid, "any")

    assert not await client.has_permission("sendToGroup", "missing-connection")
    with pytest.raises(ResourceNotFoundError):
        await client.grant_permission("sendToGroup", "missing-connection")
    with pytest.raises(ValueError, match="permission"):
        await client.grant_permission("sendEverything", cid)
    await ws.close()


async def test_token_roles_are_permissions(client: Any) -> None:
    ws = await WsClient.connect(client, roles=["webpubsub.joinLeaveGroup.room1"])
    assert await client.has_permission("joinLeaveGroup", ws.connection_id, "room1")
    assert not await client.has_permission("joinLeaveGroup", ws.connection_id, "room2")
    await ws.close()


# -- paging -----------------------------------------------------------------------------


async def test_list_connections_follows_every_page(client: Any) -> None:
    sockets = [await WsClient.connect(client, user_id=f"u{i}", groups=["big"]) for i in range(5)]
    pages: list[RawResponse] = []
    members = await collect(
        client.group("big").list_connections(max_page_size=2, on_response=pages.append)
    )
    assert len(pages) == 3
    assert all(page.status_code == 200 for page in pages)
    assert "nextLink" in pages[0].json() and "nextLink" not in pages[-1].json()
    assert sorted(m.connection_id for m in members) == sorted(s.connection_id for s in sockets)
    assert {m.user_id for m in members} == {f"u{i}" for i in range(5)}

    top = await collect(client.group("big").list_connections(max_page_size=2, top=3))
    assert len(top) == 3
    with pytest.raises(ValueError):
        client.group("big").list_connections(max_page_size=0)
    for ws in sockets:
        await ws.close()


# -- on_response and errors -------------------------------------------------------------


async def test_on_response_gets_the_raw_response(client: Any) -> None:
    seen: list[RawResponse] = []
    await client.send_to_all({"message": "Hello world!"}, on_response=seen.append)
    assert await client.group_exists("missing", on_response=seen.append) is False
    with pytest.raises(HttpResponseError):
        await client.send_to_all("x", filter="(", on_response=seen.append)
    sent, head, failed = seen
    assert sent.status_code == 202 and sent.body == b""
    assert sent.request.method == "POST" and sent.request.url.endswith(
        ":send?api-version=2024-12-01"
    )
    assert sent.request.headers["Authorization"] == "REDACTED"
    assert sent.request.body == b'{"message":"Hello world!"}'
    assert head.status_code == 404 and head.request.method == "HEAD"
    assert failed.status_code == 400
    assert failed.json()["code"] == failed.headers["x-ms-error-code"]


async def test_async_on_response_coroutine(
    make_client: Any, service: ServiceThread, hub: str
) -> None:
    if make_client.kind == "sync":
        pytest.skip("coroutine callbacks are an asyncio-client feature")
    client = make_client(service.connection_string, hub=hub)
    seen: list[int] = []

    async def on_response(raw: RawResponse) -> None:
        seen.append(raw.status_code)

    await client.send_to_all({"a": 1}, on_response=on_response)
    assert seen == [202]


async def test_errors_are_typed(
    client: Any, make_client: Any, service: ServiceThread, hub: str
) -> None:
    with pytest.raises(HttpResponseError) as info:
        await client.send_to_all("x", filter="userId eq")
    error = info.value
    assert error.status_code == 400
    assert error.error_code == "Error.InvalidFilter"
    assert "filter" in error.message.lower()
    assert "Error.InvalidFilter" in str(error) and "400" in str(error)
    assert error.response.status_code == 400

    wrong = make_client(service.endpoint, AzureKeyCredential("not-the-key-" * 4), hub=hub)
    with pytest.raises(ClientAuthenticationError) as auth:
        await wrong.send_to_all({"a": 1})
    assert auth.value.status_code == 401
    assert auth.value.error_code is not None
    assert isinstance(auth.value, webpubsub.WebPubSubError)


# -- credentials ------------------------------------------------------------------------


async def test_key_rotation(make_client: Any, service: ServiceThread, hub: str) -> None:
    credential = AzureKeyCredential(ACCESS_KEY)
    client = make_client(service.endpoint, credential, hub=hub)
    await client.send_to_all({"key": "primary"})
    credential.update(SECONDARY_KEY)
    await client.send_to_all({"key": "secondary"})
    token = await client.get_client_access_token()
    jwt.decode(
        token["token"],
        SECONDARY_KEY.encode(),
        algorithms=["HS256"],
        audience=token["baseUrl"].replace("ws://", "http://"),
    )
    credential.update("a-retired-key-" * 3)
    with pytest.raises(ClientAuthenticationError):
        await client.send_to_all({"key": "retired"})
    with pytest.raises(ValueError):
        credential.update("")


async def test_connection_string_forms(make_client: Any, service: ServiceThread, hub: str) -> None:
    host, port = service.endpoint.removeprefix("http://").rsplit(":", 1)
    forms = [
        service.connection_string,
        f"Endpoint=http://{host};Port={port};AccessKey={ACCESS_KEY};Version=1.0;",
        f"endpoint=http://{host}:{port}/;accesskey={ACCESS_KEY}",
        f"Endpoint=http://{host}:1;Port={port};AccessKey={ACCESS_KEY};Version=1.0;",
        f"Endpoint=http://LOCALHOST:{port};AccessKey={ACCESS_KEY};Version=1.0;",
    ]
    for form in forms:
        client = make_client(form, hub=hub)
        assert not await client.user_exists("nobody"), form
    with pytest.raises(webpubsub.ConnectionStringError) as info:
        make_client(f"Endpoint=http://{host};AccessKey", hub=hub)
    assert ACCESS_KEY not in str(info.value)


class FakeTokenCredential:
    """Stands in for azure-identity: returns a token the local service accepts (an
    access-key JWT whose audience is the bare endpoint) and records the scopes asked for."""

    def __init__(self, endpoint: str, lifetime: int = 3600) -> None:
        self.endpoint = endpoint
        self.lifetime = lifetime
        self.scopes: list[tuple[str, ...]] = []

    def _token(self) -> webpubsub.AccessToken:
        from webpubsub.auth.tokens import mint_rest_token

        token = mint_rest_token(ACCESS_KEY, self.endpoint, lifetime_seconds=self.lifetime)
        claims = jwt.decode(token, options={"verify_signature": False})
        return webpubsub.AccessToken(token, claims["exp"])

    def get_token(self, *scopes: str, **kwargs: Any) -> webpubsub.AccessToken:
        self.scopes.append(scopes)
        return self._token()


class FakeAsyncTokenCredential(FakeTokenCredential):
    async def get_token(self, *scopes: str, **kwargs: Any) -> webpubsub.AccessToken:  # type: ignore[override]
        self.scopes.append(scopes)
        return self._token()


async def test_token_credential(make_client: Any, service: ServiceThread, hub: str) -> None:
    credential = FakeTokenCredential(service.endpoint)
    client = make_client(service.endpoint, credential, hub=hub)
    seen: list[RawResponse] = []
    token = await client.get_client_access_token(
        user_id="entra-user", groups=["g"], roles=["webpubsub.sendToGroup"], on_response=seen.append
    )
    # With a token credential the service mints client tokens (:generateToken).
    assert len(seen) == 1 and seen[0].request.url.split("?")[0].endswith("/:generateToken")
    assert "userId=entra-user" in seen[0].request.url and "group=g" in seen[0].request.url
    claims = jwt.decode(token["token"], options={"verify_signature": False})
    assert claims["sub"] == "entra-user" and claims["webpubsub.group"] == ["g"]
    ws = await WsClient.connect(client, user_id="entra-user", groups=["g"])
    assert await client.group_exists("g")
    await client.send_to_all({"via": "entra"})
    await expect_data(ws, "json", {"via": "entra"})
    assert credential.scopes == [("https://webpubsub.azure.com/.default",)]  # cached
    mqtt = await client.get_client_access_token(client_protocol="MQTT")
    assert "/clients/mqtt/hubs/" in mqtt["baseUrl"]
    await ws.close()


async def test_token_credential_refreshes_before_expiry(
    make_client: Any, service: ServiceThread, hub: str
) -> None:
    credential = FakeTokenCredential(service.endpoint, lifetime=60)  # inside the 5 min margin
    client = make_client(service.endpoint, credential, hub=hub)
    await client.user_exists("a")
    await client.user_exists("b")
    assert len(credential.scopes) == 2


async def test_async_token_credential(service: ServiceThread, hub: str) -> None:
    credential = FakeAsyncTokenCredential(service.endpoint)
    async with webpubsub.aio.WebPubSubServiceClient(
        service.endpoint, credential, hub=hub
    ) as client:
        assert not await client.user_exists("nobody")
        token = await client.get_client_access_token(user_id="x")
        assert jwt.decode(token["token"], options={"verify_signature": False})["sub"] == "x"
    with pytest.raises(TypeError, match="aio"):
        webpubsub.WebPubSubServiceClient(service.endpoint, credential, hub=hub)  # type: ignore[arg-type]


# -- client access tokens ---------------------------------------------------------------


async def test_client_access_token_minted_locally(
    client: Any, service: ServiceThread, hub: str
) -> None:
    seen: list[RawResponse] = []
    token = await client.get_client_access_token(on_response=seen.append)
    assert seen == []  # no request with an access key
    ws_base = service.endpoint.replace("http://", "ws://") + f"/client/hubs/{hub}"
    assert token["baseUrl"] == ws_base
    assert token["url"] == f"{ws_base}?access_token={token['token']}"
    claims = jwt.decode(
        token["token"],
        ACCESS_KEY.encode(),
        algorithms=["HS256"],
        audience=service.endpoint + f"/client/hubs/{hub}",
    )
    assert set(claims) == {"aud", "iat", "exp"}
    assert claims["exp"] - claims["iat"] == 3600

    token = await client.get_client_access_token(
        user_id="user1",
        roles=["webpubsub.joinLeaveGroup.room1", "webpubsub.sendToGroup"],
        groups=["room1"],
        minutes_to_expire=5,
    )
    claims = jwt.decode(token["token"], options={"verify_signature": False})
    assert claims["sub"] == "user1"
    assert claims["role"] == ["webpubsub.joinLeaveGroup.room1", "webpubsub.sendToGroup"]
    assert claims["webpubsub.group"] == ["room1"]
    assert claims["exp"] - claims["iat"] == 300

    for protocol, path in (("mqtt", "clients/mqtt"), ("SocketIO", "clients/socketio")):
        token = await client.get_client_access_token(client_protocol=protocol)
        assert token["baseUrl"].endswith(f"/{path}/hubs/{hub}")
        aud = jwt.decode(token["token"], options={"verify_signature": False})["aud"]
        assert aud == service.endpoint + f"/{path}/hubs/{hub}"
    with pytest.raises(ValueError, match="client_protocol"):
        await client.get_client_access_token(client_protocol="stomp")
    with pytest.raises(TypeError):
        await client.get_client_access_token(roles="webpubsub.sendToGroup")

    ws = await WsClient.connect(client, user_id="user1", groups=["room1"])
    assert ws.user_id == "user1"
    assert await client.group_exists("room1")
    await ws.close()


# -- lifetime ---------------------------------------------------------------------------


def test_sync_context_manager(service: ServiceThread, hub: str) -> None:
    with webpubsub.WebPubSubServiceClient.from_connection_string(
        service.connection_string, hub=hub
    ) as client:
        assert client.hub == hub and client.endpoint == service.endpoint
        assert not client.user_exists("nobody")
    with pytest.raises(RuntimeError):
        client.user_exists("nobody")  # closed


async def test_async_context_manager(service: ServiceThread, hub: str) -> None:
    async with webpubsub.aio.WebPubSubServiceClient.from_connection_string(
        service.connection_string, hub=hub, timeout=5, connect_timeout=2
    ) as client:
        assert not await client.user_exists("nobody")
    with pytest.raises(RuntimeError):
        await client.user_exists("nobody")


def test_constructor_validation(service: ServiceThread) -> None:
    key = AzureKeyCredential(ACCESS_KEY)
    with pytest.raises(ValueError, match="hub"):
        webpubsub.WebPubSubServiceClient(service.endpoint, key, hub="1bad")
    with pytest.raises(ValueError, match="endpoint"):
        webpubsub.WebPubSubServiceClient("ftp://x", key, hub="chat")
    with pytest.raises(TypeError, match="credential"):
        webpubsub.WebPubSubServiceClient(service.endpoint, ACCESS_KEY, hub="chat")  # type: ignore[arg-type]
    with webpubsub.WebPubSubServiceClient(service.endpoint, key, hub="chat") as client:
        with pytest.raises(ValueError):
            client.group("   ")
        with pytest.raises(ValueError):
            client.send_to_user("", "x")
        assert repr(client) == f"WebPubSubServiceClient(endpoint='{service.endpoint}', hub='chat')"
        assert "ACCESS" not in repr(key) and ACCESS_KEY not in repr(key)


async def test_azure_core_credentials_interop(
    make_client: Any, service: ServiceThread, hub: str
) -> None:
    """Credentials from azure-core (what azure-identity builds on) work unchanged."""
    credentials = pytest.importorskip("azure.core.credentials")
    key = credentials.AzureKeyCredential(ACCESS_KEY)
    client = make_client(service.endpoint, key, hub=hub)
    assert not await client.user_exists("nobody")
    key.update(SECONDARY_KEY)
    assert not await client.user_exists("nobody")

    class AzureStyleCredential(FakeTokenCredential):
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            token = super().get_token(*scopes, **kwargs)
            return credentials.AccessToken(token.token, token.expires_on)

    entra = make_client(service.endpoint, AzureStyleCredential(service.endpoint), hub=hub)
    assert not await entra.user_exists("nobody")


async def test_send_with_metadata(client: Any) -> None:
    """``metadata=`` travels as X-WebPubSub-Metadata-* headers (spec-next 3.3)."""
    ws = await WsClient.connect(client, user_id="meta", groups=["mg"])
    await client.send_to_all("a", content_type="text/plain", metadata={"Trace-Id": "t1"})
    assert (await ws.receive())["metadata"] == {"trace-id": "t1"}
    await client.send_to_user("meta", "b", content_type="text/plain", metadata={"k": "v"})
    assert (await ws.receive())["metadata"] == {"k": "v"}
    await client.send_to_connection(ws.connection_id, "c", metadata={"k": "w"})
    assert (await ws.receive())["metadata"] == {"k": "w"}
    await client.group("mg").send_to_all("d", metadata={"k": "x"})
    assert (await ws.receive())["metadata"] == {"k": "x"}
    for bad in ({"k": "x" * 1025}, {"bad key": "v"}, {"k": "a,b"}, {"k": 1}):
        with pytest.raises(ValueError, match="metadata"):
            await client.send_to_all("no", metadata=bad)
    await expect_marker(client, ws, "m")
    await ws.close()
