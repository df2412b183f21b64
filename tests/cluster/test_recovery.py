"""A reliable client dropped on one node recovers through another (issue 17, part 1).

Behind a round-robin load balancer a reconnect lands anywhere: the node it reaches has the
connection handed over by the node that held it (engine/handover.py). Every message sent
meanwhile, through any node, arrives exactly once and in order; the connection keeps its id,
user, groups, roles and ackId history.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets

from tests.upstream_app import Reply, UpstreamApp
from webpubsub.auth.tokens import client_audience

from .conftest import (
    FAST,
    Cluster,
    Node,
    running_cluster,
)
from .reliable import RELIABLE, Reliable
from .test_cluster import call, receive, sdk, until


async def moved(node: Node, hub: str, direction: str) -> float:
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"{node.endpoint}/metrics")).text
    name = f'webpubsub_connections_moved_total{{direction="{direction}",hub="{hub}"}}'
    name2 = f'webpubsub_connections_moved_total{{hub="{hub}",direction="{direction}"}}'
    for line in text.splitlines():
        if line.startswith((name + " ", name2 + " ")):
            return float(line.rpartition(" ")[2])
    return 0.0


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
        # Operators see a move, not a close and an open.
        assert await moved(a, hub, "out") == 1 and await moved(b, hub, "in") == 1
        assert await moved(a, hub, "in") == 0
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

    async def test_ids_no_node_hands_out_are_refused_before_redis(self, cluster: Cluster) -> None:
        _, b, _ = cluster.nodes
        url = client_audience(b.endpoint, "moves_bad").replace("http://", "ws://")
        for bad in ("%00", "a%20b", "x" * 200, "%C3%A9", "%F0%9F%98%80", "a%0Ab"):
            query = f"?awps_connection_id={bad}&awps_reconnection_token=t"
            ws = await websockets.connect(url + query, subprotocols=[RELIABLE])  # type: ignore[list-item]
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008, bad
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"{b.endpoint}/readyz")).status_code == 200

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


async def test_the_holder_killed_means_a_clear_refusal() -> None:
    """kill -9 of the node holding a detached connection: its state is gone, and a recovery
    through another node is refused with 1008 (the client starts afresh), not left hanging."""
    with running_cluster(FAST, 2) as running:
        a, b = running.nodes
        client = Reliable("orphans", "eve")
        await client.connect(a)
        client.drop()
        await until(lambda: call(sdk(b, "orphans").connection_exists, client.connection_id))
        a.kill()
        closes: list[int] = []
        deadline = time.monotonic() + 20
        while not closes or closes[-1] != 1008:
            assert time.monotonic() < deadline, f"no clear refusal: {closes}"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await client.recover(b)
            assert closed.value.rcvd is not None
            closes.append(closed.value.rcvd.code)
        assert set(closes) <= {1008, 1013}  # 1013 (try again) only while a's heartbeat lasts


async def test_invocations_and_streams_through_a_three_node_cluster() -> None:
    """Issue 14's cluster case: a client on node a invokes the hub's event handler and gets
    its answer; a stream it writes reaches subscribers on nodes b and c, in order."""
    with UpstreamApp() as app:
        app.rules["ask"] = Reply(200, b'{"ok":true}', {"Content-Type": "application/json"})
        handlers = (
            f'[[hubs.calls.event_handlers]]\nurl_template = "{app.url_template}"\n'
            'user_event_pattern = "*"\n'
        )
        with running_cluster(FAST + handlers) as running:
            a, b, c = running.nodes
            publisher = Reliable("calls", "alice")
            await publisher.connect(a)
            assert publisher.ws is not None
            await publisher.ws.send(
                json.dumps({"type": "invoke", "invocationId": "1", "event": "ask"})
            )
            answer = await receive(publisher.ws)
            assert answer == {
                "type": "invokeResponse",
                "invocationId": "1",
                "success": True,
                "dataType": "json",
                "data": {"ok": True},
            }
            readers = [Reliable("calls", name) for name in ("bob", "carol")]
            for reader, node in zip(readers, (b, c), strict=True):
                await reader.connect(node)
                assert reader.ws is not None
                joined = await reader.request({"type": "joinGroup", "group": "live", "ackId": 1})
                assert joined["success"]
            start = {"type": "sendToGroup", "group": "live", "stream": {"streamId": "s"}}
            await publisher.ws.send(json.dumps(start))
            assert (await receive(publisher.ws))["type"] == "streamAck"
            for n in range(1, 11):
                fragment = {
                    "type": "streamData",
                    "streamId": "s",
                    "streamSequenceId": n,
                    "dataType": "text",
                    "data": str(n),
                }
                await publisher.ws.send(json.dumps(fragment))
            await publisher.ws.send(json.dumps({"type": "streamEnd", "streamId": "s"}))
            for reader in readers:
                await reader.read(11)
                assert reader.data == [str(n) for n in range(1, 11)] + [""]
