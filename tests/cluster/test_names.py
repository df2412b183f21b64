"""Hostile names in a cluster: refused where they enter, and no node is cut off by them.

A lone surrogate (``\\ud800``) is valid JSON and a valid JWT claim, but no UTF-8 encoder
takes it: before the common name rule it was acked, then killed the node's Redis writer,
and the node silently left the cluster.
"""

from __future__ import annotations

import json

import httpx
import pytest
import websockets

from webpubsub.auth.tokens import client_audience, mint_client_token, mint_rest_token

from .conftest import ACCESS_KEY, Cluster
from .test_cluster import call, connect, receive, request_ack, sdk

SURROGATE = "\ud800"


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "joinGroup", "group": SURROGATE, "ackId": 1},
        {"type": "joinGroup", "group": f"a{SURROGATE}b", "ackId": 1},
        {"type": "joinGroup", "group": "nul\0group", "ackId": 1},
        {"type": "sendToGroup", "group": SURROGATE, "data": "x", "ackId": 1},
        {"type": "event", "event": f"e{SURROGATE}", "data": "x", "ackId": 1},
    ],
    ids=["join-surrogate", "join-embedded", "join-nul", "send", "event"],
)
async def test_a_hostile_name_is_refused_and_the_node_stays_in_the_cluster(
    cluster: Cluster, frame: dict[str, object]
) -> None:
    hub = "names"
    a, b, _ = cluster.nodes
    ws_a, _id_a = await connect(a, hub, "alice")
    ws_b, _id_b = await connect(b, hub, "bob")
    async with ws_a, ws_b:
        ack = await request_ack(ws_a, frame)
        assert ack["success"] is False
        assert ack["error"]["name"] == "BadRequest"
        # The node that got the frame still reaches the others, and they reach it.
        await call(sdk(a, hub).send_to_user, "bob", {"from": "a"})
        assert (await receive(ws_b))["data"] == {"from": "a"}
        await call(sdk(b, hub).send_to_user, "alice", {"from": "b"})
        assert (await receive(ws_a))["data"] == {"from": "b"}
        assert await call(sdk(a, hub).user_exists, "bob")
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{a.endpoint}/readyz")).status_code == 200


@pytest.mark.parametrize(
    "claims",
    [
        {"user_id": SURROGATE},
        {"user_id": "a\0b"},
        {"roles": [f"webpubsub.joinLeaveGroup.{SURROGATE}"]},
    ],
    ids=["sub-surrogate", "sub-nul", "role-surrogate"],
)
async def test_a_token_with_a_hostile_name_is_refused(
    cluster: Cluster, claims: dict[str, object]
) -> None:
    hub = "names"
    a = cluster.nodes[0]
    audience = client_audience(a.endpoint, hub)
    token = mint_client_token(ACCESS_KEY, audience, **claims)  # type: ignore[arg-type]
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(audience.replace("http://", "ws://") + f"?access_token={token}")
    assert refused.value.response.status_code == 400
    body = json.loads(refused.value.response.body or b"{}")
    assert "Invalid" in body["message"]
    ws, _ = await connect(a, hub, "carol")
    async with ws:
        await call(sdk(cluster.nodes[1], hub).send_to_all, {"still": "fine"})
        assert (await receive(ws))["data"] == {"still": "fine"}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/api/hubs/names/users/a%00b/:send", b"{}"),
        ("POST", "/api/hubs/names/groups/g%00/:send", b"{}"),
        ("HEAD", "/api/hubs/names/connections/a%00b", b""),
        ("POST", "/api/hubs/names/:addToGroups", b'{"groups": ["\\ud800"]}'),
        ("POST", "/api/hubs/names/:generateToken?userId=a%00b", b""),
        ("POST", "/api/hubs/names/:generateToken?role=a%00b", b""),
    ],
)
async def test_rest_refuses_hostile_names(
    cluster: Cluster, method: str, path: str, body: bytes
) -> None:
    a = cluster.nodes[0]
    url = a.endpoint + path
    token = mint_rest_token(ACCESS_KEY, url.split("?")[0])
    sep = "&" if "?" in url else "?"
    async with httpx.AsyncClient() as http:
        response = await http.request(
            method,
            f"{url}{sep}api-version=2024-12-01",
            content=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
    assert response.status_code == 400, response.text
    if method != "HEAD":
        assert "NUL" in response.json()["message"] or "surrogate" in response.json()["message"]
