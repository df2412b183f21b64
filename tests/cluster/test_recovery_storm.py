"""The recovery storm across two nodes behind a round-robin balancer (issue 17).

As ``tests/server/test_recovery_storm.py``, but every TCP connection goes through a load
balancer without sticky sessions in front of two nodes, so nearly every recovery lands on
the other node than the one holding the connection. A publisher on a third node sends
without pause; at the end every client, this project's on both reliable subprotocols and
the official ``@azure/web-pubsub-client``, has every message once, in order, on the
connection it started with.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

import pytest

from tests.nodejs import NodeDriver, node_missing
from tests.server.test_recovery_storm import (
    PYTHON_CLIENTS,
    assert_every_inbox,
    start_storm_clients,
)
from webpubsub.aio import WebPubSubServiceClient
from webpubsub.auth.tokens import client_audience, mint_client_token

from .conftest import ACCESS_KEY, Cluster
from .proxy import RoundRobinProxy

SEED = 20261203
MIN_CUTS = 40
DEADLINE = 60.0
ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


def client_url(endpoint: str, hub: str) -> str:
    audience = client_audience(endpoint, hub)
    token = mint_client_token(ACCESS_KEY, audience, roles=ROLES)
    return audience.replace("http://", "ws://") + f"?access_token={token}"


async def test_recovery_storm_across_nodes(cluster: Cluster) -> None:
    hub = "storm_across"
    group = "storm"
    a, b, c = cluster.nodes
    async with RoundRobinProxy([a.port, b.port]) as proxy:
        url = client_url(proxy.endpoint, hub)
        clients, received, connection_ids = await start_storm_clients(url, group)

        js: NodeDriver | None = None
        if node_missing() is None:
            js = NodeDriver("client.mjs")
            # The driver blocks while it waits: in a thread, so that the proxy (on this
            # loop) carries the traffic meanwhile.
            await asyncio.to_thread(js.request, "start", client="js", url=url, protocol="reliable")
            connected = await asyncio.to_thread(
                js.wait_for, lambda line: line.get("event") == "connected", "js connected"
            )
            connection_ids["js"] = connected["connectionId"]
            await asyncio.to_thread(
                js.request, "call", client="js", method="joinGroup", args=[group]
            )
        elif os.environ.get("CI"):
            pytest.fail(f"the storm must include the official JS client: {node_missing()}")

        rng = random.Random(SEED)
        sent: list[str] = []
        cuts = 0
        done = asyncio.Event()
        started = time.monotonic()
        async with WebPubSubServiceClient.from_connection_string(
            c.connection_string, hub=hub
        ) as rest:

            async def publish() -> None:
                while not done.is_set():
                    text = str(len(sent))
                    await rest.group(group).send_to_all(text, content_type="text/plain")
                    sent.append(text)
                    await asyncio.sleep(0.005)

            async def cut() -> None:
                nonlocal cuts
                while cuts < MIN_CUTS:
                    assert time.monotonic() - started < DEADLINE, f"storm too slow: {cuts} cuts"
                    await asyncio.sleep(rng.uniform(0.02, 0.15))
                    if proxy.cut(rng):
                        cuts += 1
                done.set()

            await asyncio.gather(publish(), cut())
            await rest.group(group).send_to_all("end", content_type="text/plain")
            sent.append("end")

        deadline = started + DEADLINE + 30
        await assert_every_inbox(received, sent, clients, connection_ids, deadline)
        if js is not None:
            js_inbox: list[Any] = []
            while not js_inbox or js_inbox[-1] != "end":
                line = await asyncio.to_thread(
                    js.wait_for,
                    lambda line: line.get("event") == "group-message",
                    "js messages",
                    timeout=30,
                )
                js_inbox.append(line["message"]["data"])
            assert js_inbox == sent, "the JS client lost or duplicated messages"
            new = js.unread(lambda line: line.get("event") in ("connected", "disconnected"))
            assert new == [], "the JS client had to start a new connection"
            js.close()
        for client in clients.values():
            await client.stop()
        # Nearly every reconnect went to the other node: recoveries crossed nodes.
        assert len(proxy.routed) >= len(PYTHON_CLIENTS) + MIN_CUTS // 2
        print(f"storm across nodes: {len(sent)} messages, {cuts} cuts, {len(proxy.routed)} links")
