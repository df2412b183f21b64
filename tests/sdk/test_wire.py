"""Wire conformance: the SDK's requests against the official SDKs' recorded traffic.

Each case below is one entry of ``spec/official-sdk-requests.md`` (JS section, and the Python
section for what only Python recorded, such as ``excluded`` on close calls). A recording
server answers like the one used there; every request is compared on method, raw path,
query (decoded, repeats kept, and byte for byte where JS recorded it: we follow its order,
``api-version`` first), Content-Type, body, and the JWT (HS256 over the key's UTF-8 bytes,
``aud`` = the full request URL as sent, claims ``aud``/``iat``/``exp`` as JS sends).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
import pytest

import webpubsub
from webpubsub import GroupMember, odata

from .helpers import Recorder, collect

KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefgh"  # the recording's key
V = "api-version=2024-12-01"
JSON, TEXT, OCTET = "application/json", "text/plain", "application/octet-stream"


@dataclass(frozen=True)
class Case:
    call: Callable[[Any], Any]
    method: str
    path: str
    query: str  # the raw query string we send
    content_type: str | None = None
    body: bytes | None = None
    result: Any = None
    decoded: dict[str, list[str]] = field(default_factory=dict)  # extra check, Python order


CASES: dict[str, Case] = {
    "sendToAll json": Case(
        lambda c: c.send_to_all({"hello": "world"}),
        "POST", "/api/hubs/chat/:send", V, JSON, b'{"hello":"world"}',
    ),
    "sendToAll text": Case(
        lambda c: c.send_to_all("hi text", content_type="text/plain"),
        "POST", "/api/hubs/chat/:send", V, TEXT, b"hi text",
    ),
    "sendToAll binary": Case(
        lambda c: c.send_to_all(bytes([1, 2, 3, 255])),
        "POST", "/api/hubs/chat/:send", V, OCTET, b"\x01\x02\x03\xff",
    ),
    "sendToAll excluded+filter+ttl": Case(
        lambda c: c.send_to_all(
            b"bin",
            excluded=["conn-a", "conn-b"],
            filter=odata("userId ne {} and {} in groups", "vic's", "g1"),
            message_ttl_seconds=30,
        ),
        "POST", "/api/hubs/chat/:send",
        f"{V}&excluded=conn-a&excluded=conn-b"
        "&filter=userId%20ne%20%27vic%27%27s%27%20and%20%27g1%27%20in%20groups&messageTtlSeconds=30",
        OCTET, b"bin",
    ),
    "sendToAll filter": Case(
        lambda c: c.send_to_all({"x": 1}, filter="userId eq 'u1'"),
        "POST", "/api/hubs/chat/:send", f"{V}&filter=userId%20eq%20%27u1%27", JSON, b'{"x":1}',
    ),
    "sendToUser": Case(
        lambda c: c.send_to_user("user 1", {"m": 1}),
        "POST", "/api/hubs/chat/users/user%201/:send", V, JSON, b'{"m":1}',
    ),
    "sendToUser text+filter": Case(
        lambda c: c.send_to_user(
            "user1", "txt", content_type="text/plain", filter="connectionId ne 'c9'"
        ),
        "POST", "/api/hubs/chat/users/user1/:send", f"{V}&filter=connectionId%20ne%20%27c9%27",
        TEXT, b"txt",
    ),
    "sendToConnection text": Case(
        lambda c: c.send_to_connection("conn-1", "txt", content_type="text/plain"),
        "POST", "/api/hubs/chat/connections/conn-1/:send", V, TEXT, b"txt",
    ),
    "sendToConnection binary": Case(
        lambda c: c.send_to_connection("conn-1", bytes([9])),
        "POST", "/api/hubs/chat/connections/conn-1/:send", V, OCTET, b"\t",
    ),
    "group sendToAll excluded": Case(
        lambda c: c.group("room1").send_to_all({"g": 1}, excluded=["c1"]),
        "POST", "/api/hubs/chat/groups/room1/:send", f"{V}&excluded=c1", JSON, b'{"g":1}',
    ),
    "group sendToAll text+filter": Case(
        lambda c: c.group("room1").send_to_all(
            "gtext", content_type="text/plain", filter="userId eq 'u1'"
        ),
        "POST", "/api/hubs/chat/groups/room1/:send", f"{V}&filter=userId%20eq%20%27u1%27",
        TEXT, b"gtext",
    ),
    "group addUser": Case(
        lambda c: c.group("room1").add_user("user1"),
        "PUT", "/api/hubs/chat/users/user1/groups/room1", V,
    ),
    "group removeUser": Case(
        lambda c: c.group("room1").remove_user("user1"),
        "DELETE", "/api/hubs/chat/users/user1/groups/room1", V,
    ),
    "group addConnection": Case(
        lambda c: c.group("room1").add_connection("conn-1"),
        "PUT", "/api/hubs/chat/groups/room1/connections/conn-1", V,
    ),
    "group removeConnection": Case(
        lambda c: c.group("room1").remove_connection("conn-1"),
        "DELETE", "/api/hubs/chat/groups/room1/connections/conn-1", V,
    ),
    "group closeAllConnections": Case(
        lambda c: c.group("room1").close_all_connections(reason="bye group"),
        "POST", "/api/hubs/chat/groups/room1/:closeConnections", f"{V}&reason=bye%20group",
    ),
    "py close_group_connections excluded": Case(
        lambda c: c.group("room1").close_all_connections(reason="bye group", excluded=["c2"]),
        "POST", "/api/hubs/chat/groups/room1/:closeConnections",
        f"{V}&excluded=c2&reason=bye%20group",
        decoded={"excluded": ["c2"], "reason": ["bye group"], "api-version": ["2024-12-01"]},
    ),
    "group listConnections": Case(
        lambda c: collect(c.group("room1").list_connections()),
        "GET", "/api/hubs/chat/groups/room1/connections", V,
        result=[GroupMember("conn-1", "user-1")],
    ),
    "groupExists": Case(
        lambda c: c.group_exists("room1"), "HEAD", "/api/hubs/chat/groups/room1", V, result=True
    ),
    "groupExists missing": Case(
        lambda c: c.group_exists("missing-group"),
        "HEAD", "/api/hubs/chat/groups/missing-group", V, result=False,
    ),
    "userExists": Case(
        lambda c: c.user_exists("user1"), "HEAD", "/api/hubs/chat/users/user1", V, result=True
    ),
    "userExists missing": Case(
        lambda c: c.user_exists("missing-user"),
        "HEAD", "/api/hubs/chat/users/missing-user", V, result=False,
    ),
    "connectionExists": Case(
        lambda c: c.connection_exists("conn-1"),
        "HEAD", "/api/hubs/chat/connections/conn-1", V, result=True,
    ),
    "connectionExists missing": Case(
        lambda c: c.connection_exists("missing-conn"),
        "HEAD", "/api/hubs/chat/connections/missing-conn", V, result=False,
    ),
    "closeConnection": Case(
        lambda c: c.close_connection("conn-1", reason="kicked"),
        "DELETE", "/api/hubs/chat/connections/conn-1", f"{V}&reason=kicked",
    ),
    "closeUserConnections": Case(
        lambda c: c.close_user_connections("user1", reason="user kicked"),
        "POST", "/api/hubs/chat/users/user1/:closeConnections", f"{V}&reason=user%20kicked",
    ),
    "py close_user_connections excluded": Case(
        lambda c: c.close_user_connections("user1", reason="user kicked", excluded=["c3"]),
        "POST", "/api/hubs/chat/users/user1/:closeConnections",
        f"{V}&excluded=c3&reason=user%20kicked",
        decoded={"excluded": ["c3"], "reason": ["user kicked"], "api-version": ["2024-12-01"]},
    ),
    "closeAllConnections": Case(
        lambda c: c.close_all_connections(reason="all gone"),
        "POST", "/api/hubs/chat/:closeConnections", f"{V}&reason=all%20gone",
    ),
    "py close_all_connections excluded": Case(
        lambda c: c.close_all_connections(reason="all gone", excluded=["c4"]),
        "POST", "/api/hubs/chat/:closeConnections", f"{V}&excluded=c4&reason=all%20gone",
        decoded={"excluded": ["c4"], "reason": ["all gone"], "api-version": ["2024-12-01"]},
    ),
    "removeUserFromAllGroups": Case(
        lambda c: c.remove_user_from_all_groups("user1"),
        "DELETE", "/api/hubs/chat/users/user1/groups", V,
    ),
    "removeConnectionFromAllGroups": Case(
        lambda c: c.remove_connection_from_all_groups("conn-1"),
        "DELETE", "/api/hubs/chat/connections/conn-1/groups", V,
    ),
    "addConnectionsToGroups": Case(
        lambda c: c.add_connections_to_groups(["g1", "g2"], "userId eq 'user1'"),
        "POST", "/api/hubs/chat/:addToGroups", V, JSON,
        b'{"groups":["g1","g2"],"filter":"userId eq \'user1\'"}',
    ),
    "removeConnectionsFromGroups": Case(
        lambda c: c.remove_connections_from_groups(["g1", "g2"], "userId eq 'user1'"),
        "POST", "/api/hubs/chat/:removeFromGroups", V, JSON,
        b'{"groups":["g1","g2"],"filter":"userId eq \'user1\'"}',
    ),
    "grantPermission target": Case(
        lambda c: c.grant_permission("sendToGroup", "conn-1", target_name="room1"),
        "PUT", "/api/hubs/chat/permissions/sendToGroup/connections/conn-1", f"{V}&targetName=room1",
    ),
    "grantPermission": Case(
        lambda c: c.grant_permission(webpubsub.Permission.JOIN_LEAVE_GROUP, "conn-1"),
        "PUT", "/api/hubs/chat/permissions/joinLeaveGroup/connections/conn-1", V,
    ),
    "revokePermission": Case(
        lambda c: c.revoke_permission("sendToGroup", "conn-1", target_name="room1"),
        "DELETE", "/api/hubs/chat/permissions/sendToGroup/connections/conn-1",
        f"{V}&targetName=room1",
    ),
    "hasPermission": Case(
        lambda c: c.has_permission("joinLeaveGroup", "conn-1", "room1"),
        "HEAD", "/api/hubs/chat/permissions/joinLeaveGroup/connections/conn-1",
        f"{V}&targetName=room1", result=True,
    ),
    "hasPermission missing": Case(
        lambda c: c.has_permission("sendToGroup", "missing-conn", target_name="room1"),
        "HEAD", "/api/hubs/chat/permissions/sendToGroup/connections/missing-conn",
        f"{V}&targetName=room1", result=False,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
async def test_request_matches_recording(name: str, make_client: Any, recorder: Recorder) -> None:
    case = CASES[name]
    host, port = recorder.endpoint.removeprefix("http://").split(":")
    client = make_client(
        f"Endpoint=http://{host};Port={port};AccessKey={KEY};Version=1.0;", hub="chat"
    )
    assert await case.call(client) == case.result
    assert len(recorder.requests) == 1
    sent = recorder.last
    assert sent.method == case.method
    assert sent.path == case.path
    assert sent.raw_query == case.query
    for key, values in case.decoded.items():
        assert sent.query[key] == values
    assert sent.content_type == case.content_type
    if case.body is not None:
        assert sent.body == case.body
    else:
        assert sent.body == b""
    if case.content_type == JSON and case.body:
        json.loads(sent.body)
    assert sent.headers["accept"] == ("*/*" if case.method == "HEAD" else "application/json")
    assert sent.headers["x-ms-client-request-id"]
    assert sent.headers["user-agent"].startswith("webpubsub-python/")

    header = jwt.get_unverified_header(sent.bearer)
    assert header == {"alg": "HS256", "typ": "JWT"}
    claims = sent.claims(KEY)  # verifies the signature over the key's UTF-8 bytes
    assert set(claims) == {"aud", "iat", "exp"}
    assert claims["aud"] == f"{recorder.endpoint}{sent.target}"
    assert claims["iat"] <= time.time() + 1 < claims["exp"] <= time.time() + 3601


# -- client access tokens: local, no HTTP -----------------------------------------------

RECORDED_CS = f"Endpoint=http://127.0.0.1;Port=8080;AccessKey={KEY};Version=1.0;"


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(
        token, KEY.encode(), algorithms=["HS256"], options={"verify_aud": False}
    )
    return claims


async def test_client_tokens_match_recording(make_client: Any) -> None:
    client = make_client(RECORDED_CS, hub="chat")

    token = await client.get_client_access_token()
    assert token["baseUrl"] == "ws://127.0.0.1:8080/client/hubs/chat"
    assert token["url"] == f"ws://127.0.0.1:8080/client/hubs/chat?access_token={token['token']}"
    assert jwt.get_unverified_header(token["token"]) == {"alg": "HS256", "typ": "JWT"}
    claims = _claims(token["token"])
    assert set(claims) == {"aud", "iat", "exp"}
    assert claims["aud"] == "http://127.0.0.1:8080/client/hubs/chat"
    assert claims["exp"] - claims["iat"] == 60 * 60

    token = await client.get_client_access_token(
        user_id="user1",
        roles=["webpubsub.joinLeaveGroup.room1", "webpubsub.sendToGroup"],
        groups=["room1"],
        minutes_to_expire=5,
    )
    claims = _claims(token["token"])
    assert set(claims) == {"aud", "iat", "exp", "sub", "role", "webpubsub.group"}
    assert claims["sub"] == "user1"
    assert claims["role"] == ["webpubsub.joinLeaveGroup.room1", "webpubsub.sendToGroup"]
    assert claims["webpubsub.group"] == ["room1"]
    assert claims["exp"] - claims["iat"] == 5 * 60

    for protocol, path in (
        ("mqtt", "clients/mqtt"),
        ("MQTT", "clients/mqtt"),
        ("socketio", "clients/socketio"),
        ("SocketIO", "clients/socketio"),
    ):
        token = await client.get_client_access_token(client_protocol=protocol)
        assert token["baseUrl"] == f"ws://127.0.0.1:8080/{path}/hubs/chat"
        assert _claims(token["token"])["aud"] == f"http://127.0.0.1:8080/{path}/hubs/chat"


async def test_client_token_url_forms(make_client: Any) -> None:
    """Python lower-cases the endpoint for client URLs; https maps to wss; prefixes stay."""
    forms = {
        f"Endpoint=http://LOCALHOST;Port=8080;AccessKey={KEY};Version=1.0;": "ws://localhost:8080/client/hubs/Chat",
        f"Endpoint=http://127.0.0.1:8080/prefix;AccessKey={KEY};Version=1.0;": "ws://127.0.0.1:8080/prefix/client/hubs/Chat",
        f"Endpoint=127.0.0.1;Port=8080;AccessKey={KEY};Version=1.0;": "wss://127.0.0.1:8080/client/hubs/Chat",
        f"Endpoint=https://contoso.webpubsub.azure.com;AccessKey={KEY};Version=1.0;": "wss://contoso.webpubsub.azure.com/client/hubs/Chat",
    }  # fmt: skip
    for connection_string, base_url in forms.items():
        token = await make_client(connection_string, hub="Chat").get_client_access_token()
        assert token["baseUrl"] == base_url
        assert _claims(token["token"])["aud"] == base_url.replace("ws", "http", 1)


async def test_generate_token_request(make_client: Any, recorder: Recorder) -> None:
    """With a token credential: POST :generateToken, repeated role/group, Entra scope."""

    class Credential:
        scopes: list[tuple[str, ...]] = []

        def get_token(self, *scopes: str) -> webpubsub.AccessToken:
            self.scopes.append(scopes)
            return webpubsub.AccessToken("entra-token", int(time.time()) + 3600)

    body = json.dumps({"token": "minted"}).encode()
    from .helpers import Reply

    recorder.script = [Reply(200, {"Content-Type": "application/json"}, body)]
    credential = Credential()
    client = make_client(recorder.endpoint, credential, hub="chat")
    token = await client.get_client_access_token(
        user_id="user 1",
        roles=["r1", "r2"],
        groups=["g1", "g2"],
        minutes_to_expire=5,
        client_protocol="mqtt",
    )
    base_url = f"{recorder.endpoint.replace('http', 'ws')}/clients/mqtt/hubs/chat"
    assert token == {
        "token": "minted",
        "baseUrl": base_url,
        "url": f"{base_url}?access_token=minted",
    }
    sent = recorder.last
    assert (sent.method, sent.path) == ("POST", "/api/hubs/chat/:generateToken")
    assert sent.query == {
        "api-version": ["2024-12-01"],
        "userId": ["user 1"],
        "role": ["r1", "r2"],
        "minutesToExpire": ["5"],
        "group": ["g1", "g2"],
        "clientType": ["MQTT"],
    }
    assert sent.headers["authorization"] == "Bearer entra-token"
    assert credential.scopes == [("https://webpubsub.azure.com/.default",)]

    recorder.script = [Reply(200, {"Content-Type": "application/json"}, body)]
    await client.get_client_access_token()
    assert "clientType" not in recorder.last.query  # Default is implied (older api-versions)


async def test_reverse_proxy(make_client: Any, recorder: Recorder) -> None:
    """Requests go to the proxy; the JWT audience keeps naming the service (spec 2.4)."""
    client = make_client(
        f"Endpoint=https://contoso.webpubsub.azure.com;AccessKey={KEY};Version=1.0;",
        hub="chat",
        reverse_proxy_endpoint=recorder.endpoint,
    )
    await client.send_to_user("user1", {"m": 1})
    sent = recorder.last
    assert sent.path == "/api/hubs/chat/users/user1/:send"
    assert sent.claims(KEY)["aud"] == (
        f"https://contoso.webpubsub.azure.com/api/hubs/chat/users/user1/:send?{V}"
    )
    token = await client.get_client_access_token()
    assert token["baseUrl"] == "wss://contoso.webpubsub.azure.com/client/hubs/chat"


async def test_api_version_and_path_prefix(make_client: Any, recorder: Recorder) -> None:
    client = make_client(
        f"Endpoint={recorder.endpoint}/prefix/;AccessKey={KEY}",
        hub="Chat",
        api_version="2023-07-01",
    )
    await client.user_exists("u/1")
    sent = recorder.last
    assert sent.path == "/prefix/api/hubs/Chat/users/u%2F1"  # hub casing kept, ids encoded
    assert sent.raw_query == "api-version=2023-07-01"
    assert sent.claims(KEY)["aud"] == f"{recorder.endpoint}{sent.target}"


async def test_paging_rebases_next_link(make_client: Any, recorder: Recorder) -> None:
    """nextLink is followed on our endpoint with our api-version (as the Python SDK does)."""
    from .helpers import Reply

    page1 = {
        "value": [{"connectionId": "c1", "userId": "u1"}, {"connectionId": "c2"}],
        "nextLink": "https://elsewhere.example/prefix/api/hubs/chat/groups/g/connections"
        "?maxpagesize=2&continuationToken=abc%3D&api-version=2099-01-01",
    }
    page2 = {"value": [{"connectionId": "c3", "userId": "u3"}]}
    recorder.script = [
        Reply(200, {"Content-Type": "application/json"}, json.dumps(p).encode())
        for p in (page1, page2)
    ]
    client = make_client(f"Endpoint={recorder.endpoint}/prefix;AccessKey={KEY}", hub="chat")
    members = await collect(client.group("g").list_connections(max_page_size=2))
    assert members == [GroupMember("c1", "u1"), GroupMember("c2"), GroupMember("c3", "u3")]
    first, second = recorder.requests
    assert first.raw_query == f"{V}&maxpagesize=2"
    assert second.path == "/prefix/api/hubs/chat/groups/g/connections"
    assert second.query == {
        "api-version": ["2024-12-01"],
        "maxpagesize": ["2"],
        "continuationToken": ["abc="],
    }
    assert second.claims(KEY)["aud"] == f"{recorder.endpoint}{second.target}"
