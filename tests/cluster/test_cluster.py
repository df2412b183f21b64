"""Three nodes over one Redis server act as one service (issue: cluster on Redis).

Clients connect to different nodes; REST calls go to yet another node, through the
official Python SDK. Every effect is checked on real sockets.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import websockets
from azure.core.exceptions import HttpResponseError
from azure.messaging.webpubsubservice import WebPubSubServiceClient
from websockets.asyncio.client import ClientConnection

from webpubsub.auth.tokens import client_audience, mint_client_token, mint_rest_token

from .conftest import ACCESS_KEY, Cluster, Node

PROTOCOL = "json.webpubsub.azure.v1"
ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


def sdk(node: Node, hub: str) -> WebPubSubServiceClient:
    return WebPubSubServiceClient.from_connection_string(
        node.connection_string, hub=hub, retry_total=0
    )


async def connect(node: Node, hub: str, user_id: str | None = None) -> tuple[ClientConnection, str]:
    audience = client_audience(node.endpoint, hub)
    token = mint_client_token(ACCESS_KEY, audience, user_id=user_id, roles=ROLES)
    ws = await websockets.connect(
        audience.replace("http://", "ws://") + f"?access_token={token}",
        subprotocols=[PROTOCOL],  # type: ignore[list-item]
    )
    connected = json.loads(await ws.recv())
    return ws, connected["connectionId"]


async def receive(ws: ClientConnection, timeout: float = 5.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Poll ``check`` until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


async def request_ack(ws: ClientConnection, message: dict[str, Any]) -> Any:
    await ws.send(json.dumps(message))
    while True:
        reply = await receive(ws)
        if reply.get("type") == "ack":
            return reply


class TestAcrossNodes:
    async def test_rest_sends_reach_clients_on_every_node(self, cluster: Cluster) -> None:
        hub = "sends"
        a, b, rest = cluster.nodes
        ws_a, id_a = await connect(a, hub, "alice")
        ws_b, _id_b = await connect(b, hub, "bob")
        client = sdk(rest, hub)
        async with ws_a, ws_b:
            await call(client.send_to_all, {"n": 1})
            assert (await receive(ws_a))["data"] == {"n": 1}
            assert (await receive(ws_b))["data"] == {"n": 1}
            await call(client.send_to_user, "bob", "to bob", content_type="text/plain")
            await call(client.send_to_connection, id_a, "to a", content_type="text/plain")
            assert (await receive(ws_b))["data"] == "to bob"
            assert (await receive(ws_a))["data"] == "to a"
            await call(client.send_to_all, {"n": 2}, excluded=[id_a], filter="userId ne 'nobody'")
            await call(client.send_to_all, {"n": 3})
            assert (await receive(ws_a))["data"] == {"n": 3}
            assert (await receive(ws_b))["data"] == {"n": 2}

    async def test_membership_queries_are_cluster_wide(self, cluster: Cluster) -> None:
        hub = "membership"
        a, b, rest = cluster.nodes
        ws_a, id_a = await connect(a, hub, "alice")
        ws_b, id_b = await connect(b, hub, "bob")
        client = sdk(rest, hub)
        async with ws_a, ws_b:
            assert await call(client.connection_exists, id_a)
            assert await call(client.user_exists, "bob")
            assert not await call(client.user_exists, "carol")
            await call(client.add_user_to_group, "room", "alice")
            await call(client.add_connection_to_group, "room", id_b)
            assert await call(client.group_exists, "room")
            members = await call(lambda: list(client.list_connections(group="room")))
            assert {(m.connection_id, m.user_id) for m in members} == {
                (id_a, "alice"),
                (id_b, "bob"),
            }
            await call(client.send_to_group, "room", "hello room", content_type="text/plain")
            assert (await receive(ws_a))["group"] == "room"
            assert (await receive(ws_b))["group"] == "room"
            await call(client.remove_user_from_group, "room", "alice")
            await call(client.remove_connection_from_all_groups, id_b)
            assert not await call(client.group_exists, "room")
            with pytest.raises(HttpResponseError) as missing:
                await call(client.add_connection_to_group, "room", "no-such-connection")
            assert missing.value.status_code == 404

    async def test_permissions_across_nodes(self, cluster: Cluster) -> None:
        hub = "permissions"
        a, _, rest = cluster.nodes
        audience = client_audience(a.endpoint, hub)
        token = mint_client_token(ACCESS_KEY, audience)
        client = sdk(rest, hub)
        async with websockets.connect(
            audience.replace("http://", "ws://") + f"?access_token={token}",
            subprotocols=[PROTOCOL],  # type: ignore[list-item]
        ) as ws:
            connection_id = json.loads(await ws.recv())["connectionId"]
            denied = await request_ack(ws, {"type": "joinGroup", "group": "g", "ackId": 1})
            assert denied["error"]["name"] == "Forbidden"
            await call(client.grant_permission, "joinLeaveGroup", connection_id, target_name="g")
            assert await call(
                client.has_permission, "joinLeaveGroup", connection_id, target_name="g"
            )
            allowed = await request_ack(ws, {"type": "joinGroup", "group": "g", "ackId": 2})
            assert allowed["success"] is True
            await call(client.revoke_permission, "joinLeaveGroup", connection_id, target_name="g")
            assert not await call(
                client.has_permission, "joinLeaveGroup", connection_id, target_name="g"
            )

    async def test_client_group_messages_cross_nodes_with_no_echo(self, cluster: Cluster) -> None:
        hub = "clientgroups"
        a, b, _ = cluster.nodes
        ws_a, _ = await connect(a, hub, "alice")
        ws_b, _ = await connect(b, hub, "bob")
        async with ws_a, ws_b:
            for ws in (ws_a, ws_b):
                assert (await request_ack(ws, {"type": "joinGroup", "group": "g", "ackId": 1}))[
                    "success"
                ]
            await ws_a.send(
                json.dumps(
                    {
                        "type": "sendToGroup",
                        "group": "g",
                        "noEcho": True,
                        "dataType": "text",
                        "data": "from a",
                    }
                )
            )
            await ws_a.send(
                json.dumps(
                    {"type": "sendToGroup", "group": "g", "dataType": "text", "data": "echoed"}
                )
            )
            got_b = [await receive(ws_b), await receive(ws_b)]
            assert [m["data"] for m in got_b] == ["from a", "echoed"]
            assert got_b[0]["fromUserId"] == "alice"
            assert (await receive(ws_a))["data"] == "echoed"

    async def test_order_per_publisher_on_every_node(self, cluster: Cluster) -> None:
        hub = "order"
        a, b, rest = cluster.nodes
        ws_a, id_a = await connect(a, hub)
        ws_b, id_b = await connect(b, hub)
        client = sdk(rest, hub)
        async with ws_a, ws_b:
            await call(client.add_connection_to_group, "g", id_a)
            await call(client.add_connection_to_group, "g", id_b)

            def publish() -> None:
                for i in range(100):
                    client.send_to_group("g", {"i": i})

            await call(publish)
            for ws in (ws_a, ws_b):
                got = [(await receive(ws))["data"]["i"] for _ in range(100)]
                assert got == list(range(100))

    async def test_close_connections_across_nodes(self, cluster: Cluster) -> None:
        hub = "closing"
        a, b, rest = cluster.nodes
        ws_a, id_a = await connect(a, hub, "alice")
        ws_b, id_b = await connect(b, hub, "bob")
        client = sdk(rest, hub)
        async with ws_a, ws_b:
            await call(client.close_all_connections, reason="maintenance", excluded=[id_a])
            assert (await receive(ws_b)) == {
                "type": "system",
                "event": "disconnected",
                "message": "maintenance",
            }
            assert not await call(client.connection_exists, id_b)
            assert await call(client.connection_exists, id_a)
            await call(client.close_user_connections, "alice", reason="bye")
            assert (await receive(ws_a))["message"] == "bye"
            assert not await call(client.user_exists, "alice")


class TestFailures:
    async def test_killed_node_vanishes_and_others_keep_serving(self, cluster: Cluster) -> None:
        hub = "failure"
        a, b, rest = cluster.nodes
        ws_a, id_a = await connect(a, hub, "alice")
        _ws_b, id_b = await connect(b, hub, "bob")
        client = sdk(rest, hub)
        async with ws_a:
            await call(client.add_connection_to_group, "g", id_a)
            await call(client.add_connection_to_group, "g", id_b)
            publisher = asyncio.create_task(
                call(lambda: [client.send_to_group("g", {"i": i}) for i in range(50)])
            )
            b.kill()
            await publisher  # no REST error while a node dies
            await until(lambda: call(lambda: not client.connection_exists(id_b)), timeout=10)
            assert not await call(client.user_exists, "bob")
            got = [(await receive(ws_a))["data"]["i"] for _ in range(50)]
            assert got == list(range(50))
            members = await call(lambda: list(client.list_connections(group="g")))
            assert [m.connection_id for m in members] == [id_a]
        b.start()

    async def test_redis_restart(self, cluster: Cluster) -> None:
        hub = "redisrestart"
        a, _, rest = cluster.nodes
        ws_a, id_a = await connect(a, hub, "alice")
        async with ws_a:
            cluster.redis.stop()
            started = time.monotonic()
            async with httpx.AsyncClient() as http:
                client = sdk(rest, hub)

                async def refused() -> bool:
                    # A send accepted before the node noticed is published once Redis is
                    # back; once it noticed, it refuses with 503.
                    try:
                        await call(client.send_to_all, {"during": "outage"})
                    except HttpResponseError as exc:
                        assert exc.status_code == 503
                        return True
                    return False

                await until(refused, timeout=10)
                assert time.monotonic() - started < 10
                assert (await http.get(f"{rest.endpoint}/api/health")).status_code == 200
            cluster.redis.start()

            async def answered() -> bool:
                # 503 while the nodes re-register, never a false "not found".
                try:
                    found = await call(client.connection_exists, id_a)
                except HttpResponseError as exc:
                    assert exc.status_code == 503
                    return False
                assert found, "a connected client was reported missing after the restart"
                return True

            await until(answered, timeout=15)

            async def delivered() -> bool:
                try:
                    await call(client.send_to_all, {"after": "restart"})
                except HttpResponseError:
                    return False
                return True

            await until(delivered, timeout=15)
            message = await receive(ws_a)
            while message["data"] == {"during": "outage"}:  # accepted before the node noticed
                message = await receive(ws_a)
            assert message["data"] == {"after": "restart"}


async def test_a_storm_of_reads_does_not_starve_the_node(cluster: Cluster) -> None:
    """More concurrent REST reads than Redis connections in the pool: they wait their turn
    (redis-py's pool refuses at once when empty, which cost the writer its connection and
    made the node report Redis lost)."""
    node = cluster.nodes[0]
    hub = "readstorm"
    url = f"{node.endpoint}/api/hubs/{hub}/connections/nobody"
    token = mint_rest_token(ACCESS_KEY, url)
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:

        async def head() -> int:
            response = await http.head(
                url,
                params={"api-version": "2024-12-01"},
                headers={"Authorization": f"Bearer {token}"},
            )
            return response.status_code

        statuses = await asyncio.gather(*(head() for _ in range(400)))
        assert set(statuses) == {404}, sorted(set(statuses))
        ready = await http.get(f"{node.endpoint}/readyz")
        assert ready.status_code == 200, ready.text


async def test_a_group_stream_crosses_nodes_in_order(cluster: Cluster) -> None:
    """spec-next 2.6: fragments reach a subscriber on another node in streamSequenceId order,
    then the terminal frame."""
    hub = "streams"
    a, b, _ = cluster.nodes
    pub, _ = await connect(a, hub, "alice")
    sub, sub_id = await connect(b, hub, "bob")
    async with pub, sub:
        await call(sdk(b, hub).add_connection_to_group, "live", sub_id)
        start = {"type": "sendToGroup", "group": "live", "stream": {"streamId": "s"}}
        await pub.send(json.dumps(start))
        assert (await receive(pub))["type"] == "streamAck"
        for n in range(1, 51):
            fragment = {
                "type": "streamData",
                "streamId": "s",
                "streamSequenceId": n,
                "dataType": "json",
                "data": {"n": n},
            }
            await pub.send(json.dumps(fragment))
        await pub.send(json.dumps({"type": "streamEnd", "streamId": "s"}))
        got = [await receive(sub) for _ in range(51)]
        assert [m["data"] for m in got[:50]] == [{"n": n} for n in range(1, 51)]
        assert [m["stream"]["streamSequenceId"] for m in got] == list(range(1, 52))
        assert got[-1]["stream"]["endOfStream"] is True
        assert all(m["fromUserId"] == "alice" and m["group"] == "live" for m in got)
