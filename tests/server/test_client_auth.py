"""The client handshake and client permissions (spec 3, 4.1, 4.2, 4.6), end to end.

Handshake failures are HTTP statuses with an ``ErrorDetail`` body; accepted clients get the
subprotocol they chose echoed. Role checks are observed through acks and delivered frames.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any
from urllib.parse import quote

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ACCESS_KEY, SECONDARY_KEY
from tests.server.helpers import (
    JSON_SUBPROTOCOL,
    assert_refused,
    client_token,
    client_url,
    close_all,
    connect_json,
    connect_raw,
    forge_token,
    group_exists,
    refused_handshake,
    rest_call,
    rest_send,
    user_exists,
)
from webpubsub.protocols import CODECS, PUBSUB_SUBPROTOCOLS
from webpubsub.testing import ServiceThread

JOIN = "webpubsub.joinLeaveGroup"
SEND = "webpubsub.sendToGroup"


def forbidden(ack: dict[str, Any]) -> bool:
    return ack.get("success") is False and ack.get("error", {}).get("name") == "Forbidden"


def succeeded(ack: dict[str, Any]) -> bool:
    return ack.get("success") is True


def permission_path(hub: str, permission: str, connection_id: str) -> str:
    return f"/api/hubs/{hub}/permissions/{permission}/connections/{quote(connection_id, safe='')}"


# -- tokens -------------------------------------------------------------------------------


async def test_no_token_is_refused(service: ServiceThread, hub: str) -> None:
    response = await refused_handshake(client_url(service, hub), subprotocols=[JSON_SUBPROTOCOL])
    assert_refused(response, 401)
    response = await refused_handshake(client_url(service, hub, query=[("access_token", "")]))
    assert_refused(response, 401)


def _bad_tokens(service: ServiceThread, hub: str) -> dict[str, str]:
    now = int(time.time())
    audience = f"{service.endpoint}/client/hubs/{hub}"
    return {
        "garbage": "garbage",
        "tampered": client_token(service, hub)[:-4] + "AAAA",
        "expired": client_token(service, hub, lifetime=-3600),
        "not_yet_valid": client_token(service, hub, nbf=now + 3600),
        "no_exp": forge_token({"alg": "HS256", "typ": "JWT"}, {"aud": audience}),
        "alg_none": forge_token({"alg": "none"}, {"aud": audience, "exp": now + 60}, None),
        "hs512": forge_token(
            {"alg": "HS512"}, {"aud": audience, "exp": now + 60}, ACCESS_KEY, _sha512()
        ),
        "wrong_key": client_token(service, hub, key="another-key-0123456789abcdefghijklmnopqr"),
        "other_hub": client_token(service, hub + "_other"),
        "rest_audience": client_token(service, hub, audience=f"{service.endpoint}/api/hubs/{hub}"),
        "mqtt_audience": client_token(
            service, hub, audience=f"{service.endpoint}/clients/mqtt/hubs/{hub}"
        ),
        "other_host": client_token(service, hub, audience=f"http://example.com/client/hubs/{hub}"),
        "no_audience": forge_token({"alg": "HS256"}, {"exp": now + 60}),
    }


def _sha512() -> Any:
    import hashlib

    return hashlib.sha512


@pytest.mark.parametrize(
    "kind",
    [
        "garbage",
        "tampered",
        "expired",
        "not_yet_valid",
        "no_exp",
        "alg_none",
        "hs512",
        "wrong_key",
        "other_hub",
        "rest_audience",
        "mqtt_audience",
        "other_host",
        "no_audience",
    ],
)
async def test_invalid_token_is_refused(service: ServiceThread, hub: str, kind: str) -> None:
    token = _bad_tokens(service, hub)[kind]
    response = await refused_handshake(
        client_url(service, hub, token=token), subprotocols=[JSON_SUBPROTOCOL]
    )
    assert_refused(response, 401)
    # ...and the same in the Authorization header.
    response = await refused_handshake(
        client_url(service, hub), headers={"Authorization": f"Bearer {token}"}
    )
    assert_refused(response, 401)


async def test_token_in_authorization_header(service: ServiceThread, hub: str) -> None:
    token = client_token(service, hub, user_id="header-user")
    headers = {"Authorization": f"Bearer {token}"}
    async with await connect_json(
        service, hub, url=client_url(service, hub), headers=headers
    ) as client:
        assert client.user_id == "header-user"
        assert client.ws.subprotocol == JSON_SUBPROTOCOL


async def test_same_token_in_query_and_header(service: ServiceThread, hub: str) -> None:
    token = client_token(service, hub, user_id="both")
    headers = {"Authorization": f"Bearer {token}"}
    async with await connect_json(service, hub, token=token, headers=headers) as client:
        assert client.user_id == "both"


async def test_two_different_tokens_are_refused(service: ServiceThread, hub: str) -> None:
    query_token = client_token(service, hub, user_id="alice")
    header_token = client_token(service, hub, user_id="mallory")
    response = await refused_handshake(
        client_url(service, hub, token=query_token),
        subprotocols=[JSON_SUBPROTOCOL],
        headers={"Authorization": f"Bearer {header_token}"},
    )
    assert_refused(response, 401)


async def test_secondary_key_token(service: ServiceThread, hub: str) -> None:
    token = client_token(service, hub, user_id="second", key=SECONDARY_KEY)
    async with await connect_json(service, hub, token=token) as client:
        assert client.user_id == "second"


async def test_anonymous_token(service: ServiceThread, hub: str) -> None:
    async with await connect_json(service, hub) as client:
        assert client.user_id is None
        assert isinstance(client.connection_id, str) and client.connection_id


async def test_hub_name_casing_between_token_and_url(service: ServiceThread, hub: str) -> None:
    token = client_token(service, hub.upper(), user_id="u")
    async with await connect_json(service, hub.lower(), token=token) as client:
        assert client.user_id == "u"


async def test_hub_in_query_endpoint(service: ServiceThread, hub: str) -> None:
    """``/client/?hub=<hub>`` is an alternative client endpoint (spec 3.1)."""
    token = client_token(service, hub, user_id="q")
    url = client_url(service, hub, token=token, query=[("hub", hub)], path="/client/")
    async with await connect_json(service, hub, url=url) as client:
        assert client.user_id == "q"
    assert rest_call(service, "HEAD", f"/api/hubs/{hub}/users/q").status_code == 404


async def test_hub_in_query_endpoint_checks_the_audience(service: ServiceThread, hub: str) -> None:
    token = client_token(service, hub + "_a")
    url = client_url(service, hub, token=token, query=[("hub", hub)], path="/client/")
    assert_refused(await refused_handshake(url), 401)


@pytest.mark.parametrize("name", ["1hub", "hub-dash", "h" * 129])
async def test_invalid_hub_name_in_url(service: ServiceThread, name: str) -> None:
    token = client_token(service, name)
    assert_refused(await refused_handshake(client_url(service, name, token=token)), 400)


async def test_unknown_client_path(service: ServiceThread, hub: str) -> None:
    token = client_token(service, hub)
    url = client_url(service, hub, token=token, path=f"/client/hubs/{hub}/extra")
    assert_refused(await refused_handshake(url), 404)


async def test_more_than_one_subject_is_refused(service: ServiceThread, hub: str) -> None:
    """Only one ``sub`` claim is allowed (spec 3.2)."""
    token = client_token(service, hub, sub=["alice", "bob"])
    assert_refused(await refused_handshake(client_url(service, hub, token=token)), 401)


@pytest.mark.parametrize(
    "group", ["   ", "\t\n", "g" * 1025, ""], ids=["spaces", "tab_newline", "1025", "empty"]
)
async def test_invalid_group_claim_is_refused(service: ServiceThread, hub: str, group: str) -> None:
    token = client_token(service, hub, groups=["ok", group])
    if group == "":  # client_token drops nothing, but be explicit about the claim
        token = client_token(service, hub, **{"webpubsub.group": ["ok", ""]})
    response = await refused_handshake(
        client_url(service, hub, token=token), subprotocols=[JSON_SUBPROTOCOL]
    )
    assert_refused(response, 400)
    assert not group_exists(service, hub, "ok")


async def test_group_claim_as_single_string(service: ServiceThread, hub: str) -> None:
    token = client_token(service, hub, **{"webpubsub.group": "solo"})
    async with await connect_json(service, hub, token=token):
        assert group_exists(service, hub, "solo")


# -- subprotocols -------------------------------------------------------------------------


def _supported(name: str) -> bool:
    return name in CODECS


@pytest.mark.parametrize("subprotocol", PUBSUB_SUBPROTOCOLS)
async def test_predefined_subprotocol_alone(
    service: ServiceThread, hub: str, subprotocol: str
) -> None:
    """Offered alone, a predefined subprotocol is either served and echoed, or refused with
    400 when this build does not implement it (never silently treated as a simple client)."""
    url = client_url(service, hub, token=client_token(service, hub))
    if not _supported(subprotocol):
        assert_refused(await refused_handshake(url, subprotocols=[subprotocol]), 400)
        return
    async with connect(url, subprotocols=[subprotocol], open_timeout=5) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == subprotocol
        assert ws.response is not None
        assert ws.response.headers["Sec-WebSocket-Protocol"] == subprotocol


async def test_only_unsupported_predefined_subprotocols(service: ServiceThread, hub: str) -> None:
    unsupported = [name for name in PUBSUB_SUBPROTOCOLS if not _supported(name)]
    if not unsupported:
        pytest.skip("every predefined subprotocol is implemented")
    token = client_token(service, hub)
    response = await refused_handshake(
        client_url(service, hub, token=token), subprotocols=unsupported
    )
    assert_refused(response, 400)


@pytest.mark.parametrize(
    "offered",
    [
        [JSON_SUBPROTOCOL],
        ["my.custom.protocol", JSON_SUBPROTOCOL],
        [JSON_SUBPROTOCOL, "protobuf.webpubsub.azure.v1"],
        ["protobuf.webpubsub.azure.v1", JSON_SUBPROTOCOL],
        ["json.reliable.webpubsub.azure.v1", JSON_SUBPROTOCOL],
    ],
)
async def test_chosen_subprotocol_is_echoed(
    service: ServiceThread, hub: str, offered: list[str]
) -> None:
    """With several offers the first supported predefined one is chosen and echoed."""
    expected = next(name for name in offered if _supported(name))
    url = client_url(service, hub, token=client_token(service, hub, user_id="p"))
    async with connect(url, subprotocols=offered, open_timeout=5) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == expected
        assert ws.response is not None
        assert ws.response.headers["Sec-WebSocket-Protocol"] == expected
        if expected == JSON_SUBPROTOCOL:
            connected = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert connected["event"] == "connected"
            assert connected["userId"] == "p"
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "pong"}


async def test_simple_client_gets_bare_payloads(service: ServiceThread, hub: str) -> None:
    ws = await connect_raw(service, hub, user_id="simple", groups=["room"])
    try:
        assert ws.subprotocol is None
        sends = [
            ("text/plain", b"hello"),
            ("application/json", b'{"a": [1, 2]}'),
            ("application/json", b'"Hello World"'),
            ("application/octet-stream", b"\x00\x01\xff"),
        ]
        for content_type, body in sends:
            response = rest_call(
                service, "POST", f"/api/hubs/{hub}/:send", content=body, content_type=content_type
            )
            assert response.status_code == 202
        # No connected greeting: the first frame is the first payload, exactly as sent.
        assert await asyncio.wait_for(ws.recv(), 5) == "hello"
        assert await asyncio.wait_for(ws.recv(), 5) == '{"a": [1, 2]}'
        assert await asyncio.wait_for(ws.recv(), 5) == '"Hello World"'
        assert await asyncio.wait_for(ws.recv(), 5) == b"\x00\x01\xff"
        rest_send(service, hub, "groups/room", b"to group")
        assert await asyncio.wait_for(ws.recv(), 5) == "to group"
    finally:
        await ws.close()


async def test_simple_client_frame_without_event_handler(service: ServiceThread, hub: str) -> None:
    """No upstream takes the ``message`` event: the simple client is dropped (spec 4.2)."""
    ws = await connect_raw(service, hub, user_id="talker")
    await ws.send("anyone there?")
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    assert ws.protocol.close_rcvd is not None
    assert ws.protocol.close_rcvd.code == 1011
    assert not user_exists(service, hub, "talker")


async def test_custom_subprotocol_only_is_a_simple_client(service: ServiceThread, hub: str) -> None:
    ws = await connect_raw(service, hub, user_id="custom", subprotocols=["chat.v1"])
    try:
        rest_send(service, hub, "users/custom", b"x")
        assert await asyncio.wait_for(ws.recv(), 5) == "x"
    finally:
        await ws.close()


# -- simple clients in sendToGroup mode (spec 4.2) ----------------------------------------


@pytest.mark.parametrize("role", [SEND, f"{SEND}.room"])
async def test_send_to_group_mode_with_role(service: ServiceThread, hub: str, role: str) -> None:
    listener = await connect_json(service, hub, groups=["room"])
    publisher = await connect_raw(
        service,
        hub,
        user_id="pub",
        roles=[role],
        query=[("webpubsub_mode", "sendToGroup"), ("group", "room")],
    )
    try:
        await publisher.send("hello room")
        message = await listener.receive()
        assert message == {
            "type": "message",
            "from": "group",
            "group": "room",
            "fromUserId": "pub",
            "dataType": "text",
            "data": "hello room",
        }
        await publisher.send(b"\x01\x02\x03")
        message = await listener.receive()
        assert message["dataType"] == "binary"
        assert base64.b64decode(message["data"]) == b"\x01\x02\x03"
    finally:
        await close_all([listener, publisher])


async def test_send_to_group_mode_echo_and_no_echo(service: ServiceThread, hub: str) -> None:
    mode = [("webpubsub_mode", "sendToGroup"), ("group", "room")]
    echo = await connect_raw(service, hub, roles=[SEND], groups=["room"], query=mode)
    quiet = await connect_raw(
        service, hub, roles=[SEND], groups=["room"], query=[*mode, ("noEcho", "true")]
    )
    try:
        await echo.send("from echo")
        assert await asyncio.wait_for(echo.recv(), 5) == "from echo"
        assert await asyncio.wait_for(quiet.recv(), 5) == "from echo"
        await quiet.send("from quiet")
        assert await asyncio.wait_for(echo.recv(), 5) == "from quiet"
        rest_send(service, hub, "groups/room", b"marker")
        # ``quiet`` did not get its own frame: the next thing it sees is the marker.
        assert await asyncio.wait_for(quiet.recv(), 5) == "marker"
        assert await asyncio.wait_for(echo.recv(), 5) == "marker"
    finally:
        await close_all([echo, quiet])


@pytest.mark.parametrize("roles", [[], [JOIN], [f"{SEND}.other"], [f"{SEND}.roo"]])
async def test_send_to_group_mode_without_role(
    service: ServiceThread, hub: str, roles: list[str]
) -> None:
    token = client_token(service, hub, roles=roles)
    url = client_url(
        service, hub, token=token, query=[("webpubsub_mode", "sendToGroup"), ("group", "room")]
    )
    response = await refused_handshake(url)
    assert response.status_code in (401, 403), response.status_code
    assert_refused(response, response.status_code)


@pytest.mark.parametrize(
    "query",
    [
        [("webpubsub_mode", "sendToGroup")],
        [("webpubsub_mode", "sendToGroup"), ("group", "a"), ("group", "b")],
        [("webpubsub_mode", "sendToGroup"), ("group", "   ")],
        [("webpubsub_mode", "bogus")],
    ],
    ids=["no_group", "two_groups", "blank_group", "unknown_mode"],
)
async def test_send_to_group_mode_bad_parameters(
    service: ServiceThread, hub: str, query: list[tuple[str, str]]
) -> None:
    token = client_token(service, hub, roles=[SEND])
    response = await refused_handshake(client_url(service, hub, token=token, query=query))
    assert_refused(response, 400)


# -- roles of PubSub clients (spec 4.6) ---------------------------------------------------


async def test_no_role_forbids_join_leave_and_send(service: ServiceThread, hub: str) -> None:
    async with await connect_json(service, hub, user_id="norole") as client:
        assert forbidden(await client.join("g"))
        assert not group_exists(service, hub, "g")
        assert forbidden(await client.leave("g"))
        assert forbidden(await client.publish("g", {"x": 1}))


async def test_denied_request_without_ack_id_is_ignored(service: ServiceThread, hub: str) -> None:
    async with await connect_json(service, hub, user_id="quiet") as client:
        await client.send({"type": "joinGroup", "group": "g"})
        await client.send({"type": "sendToGroup", "group": "g", "dataType": "text", "data": "x"})
        await client.send({"type": "ping"})
        assert await client.receive() == {"type": "pong"}
        assert not group_exists(service, hub, "g")


async def test_scoped_join_leave_role(service: ServiceThread, hub: str) -> None:
    async with await connect_json(service, hub, roles=[f"{JOIN}.a.b"]) as client:
        assert succeeded(await client.join("a.b"))
        assert group_exists(service, hub, "a.b")
        assert forbidden(await client.join("a"))
        assert forbidden(await client.join("A.B"))  # group names are case-sensitive
        assert forbidden(await client.join("a.b.c"))
        assert forbidden(await client.publish("a.b", "hi", "text"))
        assert succeeded(await client.leave("a.b"))
        assert not group_exists(service, hub, "a.b")


async def test_scoped_send_role(service: ServiceThread, hub: str) -> None:
    listener = await connect_json(service, hub, groups=["g1", "g2"])
    sender = await connect_json(service, hub, user_id="s", roles=[f"{SEND}.g1"])
    try:
        assert succeeded(await sender.publish("g1", "one", "text"))
        assert forbidden(await sender.publish("g2", "two", "text"))
        assert forbidden(await sender.join("g1"))
        message = await listener.receive()
        assert (message["group"], message["data"]) == ("g1", "one")
        assert succeeded(await sender.publish("g1", "three", "text"))
        # "two" never arrived: the next message is "three".
        assert (await listener.receive())["data"] == "three"
    finally:
        await close_all([listener, sender])


async def test_role_claim_as_single_string(service: ServiceThread, hub: str) -> None:
    token = client_token(service, hub, role=JOIN)
    async with await connect_json(service, hub, token=token) as client:
        assert succeeded(await client.join("any"))


async def test_rest_grant_and_revoke_join_leave(service: ServiceThread, hub: str) -> None:
    async with await connect_json(service, hub, user_id="g") as client:
        path = permission_path(hub, "joinLeaveGroup", client.connection_id)
        target = [("targetName", "room")]
        assert rest_call(service, "HEAD", path, query=target).status_code == 404
        assert forbidden(await client.join("room"))

        assert rest_call(service, "PUT", path, query=target).status_code == 200
        assert rest_call(service, "HEAD", path, query=target).status_code == 200
        assert succeeded(await client.join("room"))
        assert forbidden(await client.join("other"))
        assert group_exists(service, hub, "room")

        assert rest_call(service, "DELETE", path, query=target).status_code == 204
        assert rest_call(service, "HEAD", path, query=target).status_code == 404
        assert forbidden(await client.leave("room"))
        assert forbidden(await client.join("room2"))
        assert group_exists(service, hub, "room")  # revoking does not remove memberships

        # Without targetName the grant covers every group.
        assert rest_call(service, "PUT", path).status_code == 200
        assert rest_call(service, "HEAD", path).status_code == 200
        assert succeeded(await client.join("other"))
        assert rest_call(service, "DELETE", path).status_code == 204
        assert forbidden(await client.join("third"))


async def test_rest_grant_and_revoke_send(service: ServiceThread, hub: str) -> None:
    listener = await connect_json(service, hub, groups=["room"])
    sender = await connect_json(service, hub, user_id="s")
    try:
        path = permission_path(hub, "sendToGroup", sender.connection_id)
        target = [("targetName", "room")]
        assert forbidden(await sender.publish("room", "denied", "text"))
        assert rest_call(service, "PUT", path, query=target).status_code == 200
        assert succeeded(await sender.publish("room", "allowed", "text"))
        assert (await listener.receive())["data"] == "allowed"
        assert rest_call(service, "DELETE", path, query=target).status_code == 204
        assert forbidden(await sender.publish("room", "denied again", "text"))
        rest_send(service, hub, "groups/room", b"marker")
        assert (await listener.receive())["data"] == "marker"
    finally:
        await close_all([listener, sender])


async def test_token_roles_in_check_permission(service: ServiceThread, hub: str) -> None:
    async with await connect_json(service, hub, roles=[JOIN, f"{SEND}.room"]) as client:
        join = permission_path(hub, "joinLeaveGroup", client.connection_id)
        send = permission_path(hub, "sendToGroup", client.connection_id)
        assert rest_call(service, "HEAD", join).status_code == 200
        assert rest_call(service, "HEAD", join, query=[("targetName", "x")]).status_code == 200
        assert rest_call(service, "HEAD", send, query=[("targetName", "room")]).status_code == 200
        assert rest_call(service, "HEAD", send, query=[("targetName", "x")]).status_code == 404


async def test_grant_to_unknown_connection(service: ServiceThread, hub: str) -> None:
    path = permission_path(hub, "sendToGroup", "no-such-connection")
    response = rest_call(service, "PUT", path, query=[("targetName", "g")])
    assert response.status_code == 404
    assert json.loads(response.content)["code"]
