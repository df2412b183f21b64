"""App-server tunnels in a cluster: a tunnel lands on one node, its clients on any.

REST calls over a tunnel act hub-wide; events of a client on another node are relayed
through Redis to the node holding its app server's tunnel, and follow the app server when
it reconnects through yet another node (socketio spec 4.6, work package 6)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import InvalidStatus

from tests.nodejs import JsError, NodeDriver, node_missing
from tests.tunnel_client import TunnelClient, event_type
from webpubsub.protocols import tunnel as t

from .conftest import (
    ACCESS_KEY,
    FAST,
    Cluster,
    Node,
    running_cluster,
)
from .test_cluster import connect, receive

HUB = "tch"
CONNECT = "azure.webpubsub.sys.connect"
MESSAGE = "azure.webpubsub.user.message"
DISCONNECTED = "azure.webpubsub.sys.disconnected"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """Three nodes; hub ``tch`` sends its events to the app servers' tunnels."""
    handlers = f'[[hubs.{HUB}.event_handlers]]\nurl_template = "tunnel:///eventhandler/"\n'
    with running_cluster(FAST + handlers) as running:
        yield running


async def echo(request: t.HttpRequest) -> tuple[int, dict[str, list[str]], bytes]:
    if event_type(request) == MESSAGE:
        return 200, {"Content-Type": ["text/plain"]}, b"echo:" + request.content
    if event_type(request) == CONNECT:
        return 204, {}, b""
    return 200, {}, b""


async def connect_when_known(node: Node, hub: str) -> tuple[object, str]:
    """Connect once ``node`` learnt of the app server (from the others' heartbeats)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return await connect(node, hub)
        except InvalidStatus as exc:
            assert exc.response.status_code == 503, exc.response.status_code
            assert time.monotonic() < deadline, "the app server never became known"
            await asyncio.sleep(0.1)  # polling the cluster's view, not timing an effect


async def send_event(ws: object, text: str) -> None:
    message = {"type": "event", "event": "message", "dataType": "text", "data": text}
    await ws.send(json.dumps(message))  # type: ignore[attr-defined]


async def test_rest_over_a_tunnel_reaches_other_nodes(cluster: Cluster) -> None:
    hub = "tunnelrest"
    first, second = cluster.nodes[0], cluster.nodes[1]
    async with await TunnelClient.open(first, hub, key=ACCESS_KEY) as tunnel:
        ws, connection_id = await connect(second, hub)
        try:
            body = json.dumps({"groups": ["0~Lw~"], "filter": f"connectionId eq '{connection_id}'"})
            answer = await tunnel.call(
                "POST", f"/api/hubs/{hub}/:addToGroups", body.encode(), "application/json"
            )
            assert answer.status == 200
            answer = await tunnel.call(
                "POST", f"/api/hubs/{hub}/groups/0~Lw~/:send", b'42["x"]', "text/plain"
            )
            assert answer.status == 202
            assert (await receive(ws))["data"] == '42["x"]'
            answer = await tunnel.call(
                "POST", f"/api/hubs/{hub}/connections/{connection_id}/:send", b"2", "text/plain"
            )
            assert answer.status == 202
            assert (await receive(ws))["data"] == "2"
        finally:
            await ws.close()


async def test_events_relayed_to_the_tunnels_node(cluster: Cluster) -> None:
    """Tunnel on node 0, client on node 1: connect, user events and disconnected reach the
    app server; it reconnects through node 2 and the client's next event follows it."""
    first, second, third = cluster.nodes
    app = await TunnelClient.open(first, HUB, sub="A", handler=echo, key=ACCESS_KEY)
    ws, connection_id = await connect_when_known(second, HUB)
    try:
        connect_event = await app.wait_for(lambda r: event_type(r) == CONNECT)
        assert connect_event.headers["ce-connectionId"] == [connection_id]
        await send_event(ws, "one")
        assert (await receive(ws))["data"] == "echo:one"

        await app.close()
        async with await TunnelClient.open(
            third, HUB, sub="A", handler=echo, key=ACCESS_KEY
        ) as moved:
            await send_event(ws, "two")
            assert (await receive(ws, timeout=10))["data"] == "echo:two"
            assert [r.content for r in moved.requests if event_type(r) == MESSAGE] == [b"two"]
            await ws.close()
            gone = await moved.wait_for(lambda r: event_type(r) == DISCONNECTED)
            assert gone.headers["ce-connectionId"] == [connection_id]
    finally:
        await ws.close()


@pytest.mark.skipif(node_missing() is not None, reason=str(node_missing()))
def test_socketio_app_server_on_one_node_clients_on_another(cluster: Cluster) -> None:
    """The official packages: ``useAzureSocketIO`` connects to node 0, a socket.io-client
    to node 1; greeting, events, acks both ways and broadcasts cross the cluster."""
    hub = "sioc"
    first, second = cluster.nodes[0], cluster.nodes[1]
    app, clients = NodeDriver("socketio_app.mjs"), NodeDriver("socketio_client.mjs")
    try:
        app.request("start", hub=hub, connectionString=first.connection_string)
        deadline = time.monotonic() + 10
        while True:
            try:
                clients.request(
                    "connect",
                    name="a",
                    url=second.endpoint,
                    path=f"/clients/socketio/hubs/{hub}",
                    transports=["websocket"],
                )
                break
            except JsError:
                # 503 until node 1 heard of the app server (its next heartbeat)
                assert time.monotonic() < deadline, "node 1 never learnt of the app server"
                time.sleep(0.2)
        socket = app.wait_for(lambda line: line.get("event") == "connection", "connection")
        hello = clients.wait_for(lambda line: line.get("name") == "hello", "hello")
        assert hello["args"] == ["world"]
        clients.request("emit", name="a", event="howdy", args=["stranger"])
        howdy = app.wait_for(lambda line: line.get("name") == "howdy", "howdy")
        assert howdy["args"] == ["stranger"]
        assert clients.request("emitWithAck", name="a", event="add", args=[2, 3]) == 5
        assert app.request("askClient", socket=socket["id"], event="q", args=[41]) == 42
        app.request("emit", event="news", args=["x"])
        news = clients.wait_for(lambda line: line.get("name") == "news", "news")
        assert news["args"] == ["x"]
        # A broadcast with acknowledgements (:invoke) reaches the clients of both nodes.
        clients.request(
            "connect",
            name="b",
            url=first.endpoint,
            path=f"/clients/socketio/hubs/{hub}",
            transports=["polling"],
        )
        deadline = time.monotonic() + 10
        while True:  # node 0 learns of node 1's clients with its next heartbeat
            answer = app.request("emitWithAck", event="q", args=[1], timeout=3000)
            if answer == {"answers": [2, 2]} or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert answer == {"answers": [2, 2]}
    finally:
        clients.close()
        app.close()
