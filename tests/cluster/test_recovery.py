"""A reliable client dropped on one node recovers through another (issue 17, part 1).

Behind a round-robin load balancer a reconnect lands anywhere: the node it reaches has the
connection handed over by the node that held it (engine/handover.py). Every message sent
meanwhile, through any node, arrives exactly once and in order; the connection keeps its id,
user, groups, roles and ackId history.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from webpubsub.auth.tokens import client_audience, mint_client_token

from .conftest import ACCESS_KEY, Cluster, Node
from .test_cluster import call, receive, sdk, until

RELIABLE = "json.reliable.webpubsub.azure.v1"
ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


class Reliable:
    """A reliable JSON client on raw sockets: it acks what it gets and can drop and come
    back through any node with its reconnection token."""

    def __init__(self, hub: str, user_id: str) -> None:
        self.hub = hub
        self.user_id = user_id
        self.ws: ClientConnection | None = None
        self.connection_id = ""
        self.token = ""
        self.last_sequence = 0
        self.data: list[Any] = []  # the data of every message received, in order

    async def connect(self, node: Node) -> dict[str, Any]:
        audience = client_audience(node.endpoint, self.hub)
        access = mint_client_token(ACCESS_KEY, audience, user_id=self.user_id, roles=ROLES)
        url = audience.replace("http://", "ws://") + f"?access_token={access}"
        return await self._open(url)

    async def recover(self, node: Node) -> dict[str, Any]:
        url = client_audience(node.endpoint, self.hub).replace("http://", "ws://")
        url += f"?awps_connection_id={self.connection_id}&awps_reconnection_token={self.token}"
        return await self._open(url)

    async def _open(self, url: str) -> dict[str, Any]:
        self.ws = await websockets.connect(url, subprotocols=[RELIABLE])  # type: ignore[list-item]
        connected: dict[str, Any] = await receive(self.ws)
        assert connected["event"] == "connected", connected
        self.connection_id = connected["connectionId"]
        self.token = connected["reconnectionToken"]
        return connected

    def drop(self) -> None:
        """The network fails: no close frame."""
        assert self.ws is not None
        self.ws.transport.abort()

    async def read(self, count: int, timeout: float = 10.0) -> list[Any]:
        """Read until ``count`` more data messages arrived (acking them); the replies
        (acks) met on the way are returned."""
        assert self.ws is not None
        replies: list[Any] = []
        target = len(self.data) + count
        while len(self.data) < target:
            frame = await receive(self.ws, timeout)
            if frame.get("type") == "message":
                await self._take(frame)
            else:
                replies.append(frame)
        return replies

    async def _take(self, frame: dict[str, Any]) -> None:
        assert self.ws is not None
        sequence = frame["sequenceId"]
        if sequence <= self.last_sequence:
            return  # a resend of what we had: the official clients drop these too
        self.last_sequence = sequence
        self.data.append(frame["data"])
        await self.ws.send(json.dumps({"type": "sequenceAck", "sequenceId": sequence}))

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.ws is not None
        await self.ws.send(json.dumps(message))
        while True:
            frame = await receive(self.ws)
            if frame.get("type") == "ack":
                return frame
            if frame.get("type") == "message":
                await self._take(frame)


class TestRecoveryOnAnyNode:
    async def test_messages_sent_meanwhile_arrive_once_in_order(self, cluster: Cluster) -> None:
        hub = "moves"
        a, b, c = cluster.nodes
        client = Reliable(hub, "alice")
        await client.connect(a)
        first_id = client.connection_id
        rest_c, rest_a = sdk(c, hub), sdk(a, hub)
        await call(rest_c.add_connection_to_group, "room", first_id)
        assert (await client.request({"type": "joinGroup", "group": "own", "ackId": 1}))["success"]
        await call(rest_c.send_to_group, "room", {"n": 0})
        await client.read(1)

        client.drop()
        # While it is away: sends through every node, to its group, its user and itself,
        # and a membership change it must keep.
        await call(rest_c.send_to_group, "room", {"n": 1})
        await call(rest_a.send_to_user, "alice", {"n": 2})
        await call(sdk(b, hub).send_to_connection, first_id, {"n": 3})
        await call(rest_c.add_connection_to_group, "late", first_id)
        await call(rest_a.send_to_group, "late", {"n": 4})

        connected = await client.recover(b)
        assert connected["connectionId"] == first_id
        assert connected["userId"] == "alice"
        await client.read(4)
        assert [d["n"] for d in client.data] == [0, 1, 2, 3, 4]

        # From now on the connection lives on b: sends through any node reach it once.
        await call(rest_a.send_to_group, "room", {"n": 5})
        await call(rest_c.send_to_group, "own", {"n": 6})
        await call(rest_c.send_to_group, "late", {"n": 7})
        await client.read(3)
        assert [d["n"] for d in client.data] == list(range(8))
        assert await call(rest_a.connection_exists, first_id)
        # Its ackId history came along: the same ackId again is a Duplicate.
        again = await client.request({"type": "joinGroup", "group": "own", "ackId": 1})
        assert again["success"] is False and again["error"]["name"] == "Duplicate"
        # And its roles: it may still send to a group.
        sent = await client.request(
            {"type": "sendToGroup", "group": "own", "data": {"n": 8}, "ackId": 2}
        )
        assert sent["success"] is True
        await client.read(9 - len(client.data))  # (it may have come before the ack)
        assert client.data[-1] == {"n": 8}
        assert client.ws is not None
        await client.ws.close()

    async def test_recovery_under_a_steady_broadcast_loses_nothing(self, cluster: Cluster) -> None:
        """Three publishers, one through each node (the one that held it, the one it comes
        back through, a third): each one's messages arrive exactly once, in its order."""
        hub = "moves_steady"
        a, b, c = cluster.nodes
        client = Reliable(hub, "bob")
        await client.connect(a)
        await call(sdk(c, hub).add_connection_to_group, "feed", client.connection_id)
        total = 150
        halfway = asyncio.Event()

        async def broadcast(node: Node, name: str) -> None:
            rest = sdk(node, hub)
            for n in range(total):
                await call(rest.send_to_group, "feed", {"p": name, "n": n})
                if n == total // 2:
                    halfway.set()

        senders = [
            asyncio.create_task(broadcast(n, name)) for n, name in ((a, "a"), (b, "b"), (c, "c"))
        ]
        await client.read(20)
        client.drop()
        await halfway.wait()
        await client.recover(b)
        await client.read(3 * total - len(client.data), timeout=30)
        await asyncio.gather(*senders)
        for name in "abc":
            assert [d["n"] for d in client.data if d["p"] == name] == list(range(total))
        assert len(client.data) == 3 * total
        assert client.ws is not None
        await client.ws.close()

    async def test_a_wrong_token_or_an_unknown_connection_is_refused(
        self, cluster: Cluster
    ) -> None:
        hub = "moves_refused"
        a, b, _ = cluster.nodes
        client = Reliable(hub, "carol")
        await client.connect(a)
        client.drop()
        real_token = client.token
        client.token = real_token[:-2] + ("AA" if not real_token.endswith("AA") else "BB")
        url = client_audience(b.endpoint, hub).replace("http://", "ws://")
        for query in (
            f"?awps_connection_id={client.connection_id}&awps_reconnection_token={client.token}",
            f"?awps_connection_id=nobody&awps_reconnection_token={real_token}",
        ):
            ws = await websockets.connect(url + query, subprotocols=[RELIABLE])  # type: ignore[list-item]
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
        # The right token still works after the refusals: the connection was not lost.
        client.token = real_token
        connected = await client.recover(b)
        assert connected["connectionId"] == client.connection_id
        assert client.ws is not None
        await client.ws.close()

    async def test_it_can_move_again(self, cluster: Cluster) -> None:
        hub = "moves_twice"
        a, b, c = cluster.nodes
        client = Reliable(hub, "dave")
        await client.connect(a)
        rest = sdk(c, hub)
        for n, node in enumerate((b, c, a)):
            client.drop()
            await call(rest.send_to_user, "dave", {"n": n})
            await client.recover(node)
            await client.read(1)
        assert [d["n"] for d in client.data] == [0, 1, 2]
        await until(lambda: call(rest.connection_exists, client.connection_id))
        assert client.ws is not None
        await client.ws.close()
