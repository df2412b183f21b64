"""Cluster mode: clients that come and go leave nothing in Redis, nor on either node.

Two nodes share a Redis server; clients on both join groups, get users and permissions,
publish, then leave in every way (clean close, reset, mid-frame, reliable ones after their
recovery window). Afterwards the hub's membership keys are gone from Redis and both nodes
are back to their baseline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from tests.cluster.conftest import RedisServer, running_redis
from tests.conftest import ACCESS_KEY
from tests.hardening.support import JOIN, SEND, Census, assert_no_leaks
from tests.server.helpers import close_all, connect_json, connect_raw, rest_call
from webpubsub.server.config import Cluster, Limits, Settings
from webpubsub.testing import ServiceThread

HUB = "clusterleak"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
def nodes(redis_server: RedisServer) -> Iterator[list[ServiceThread]]:
    def settings() -> Settings:
        return Settings(
            port=0,
            access_keys=[ACCESS_KEY],
            redis_url=redis_server.url,
            limits=Limits(recovery_window=0.3),
            cluster=Cluster(node_ttl=2.0, heartbeat_interval=0.5, redis_timeout=1.0),
        )

    with ServiceThread(settings()) as first, ServiceThread(settings()) as second:
        yield [first, second]


def hub_keys(server: RedisServer) -> list[str]:
    client = redis.Redis.from_url(server.url, decode_responses=True)
    try:
        return sorted(client.scan_iter(match=f"wps:{{{HUB}}}:*", count=1000))
    finally:
        client.close()


async def test_nothing_is_left_in_redis(
    nodes: list[ServiceThread], redis_server: RedisServer
) -> None:
    baselines = [Census.take(node) for node in nodes]
    roles = [JOIN, SEND]
    for _round in range(2):
        clients = []
        for i in range(12):
            node = nodes[i % 2]
            clients.append(
                await connect_json(node, HUB, user_id=f"u{i % 4}", roles=roles, groups=["all"])
            )
        reliable = [
            await connect_json(
                node,
                HUB,
                roles=roles,
                groups=["r"],
                subprotocols=["json.reliable.webpubsub.azure.v1"],
            )
            for node in nodes
        ]
        raws = [await connect_raw(node, HUB, user_id="raw", groups=["raw"]) for node in nodes]
        for i, client in enumerate(clients):
            assert (await client.join(f"own{i}"))["success"]
            path = f"/api/hubs/{HUB}/permissions/sendToGroup/connections/{client.connection_id}"
            assert rest_call(nodes[0], "PUT", path).status_code == 200
        assert rest_call(nodes[1], "PUT", f"/api/hubs/{HUB}/users/u1/groups/extra").is_success
        assert hub_keys(redis_server), "the cluster should have recorded the clients"
        for i, client in enumerate(clients):
            if i % 3 == 0:
                await client.close()
            elif i % 3 == 1:
                client.ws.transport.abort()
            else:
                client.ws.transport.write(b"\x81\xfe\x00")
                client.ws.transport.abort()
        for client in reliable:
            client.ws.transport.abort()
        for raw in raws:
            raw.transport.abort()
        for node, baseline in zip(nodes, baselines, strict=True):
            await asyncio.to_thread(assert_no_leaks, node, baseline, 10.0, fds=False)
        await close_all([*clients, *reliable, *raws])

        async def redis_clean() -> bool:
            return not await asyncio.to_thread(hub_keys, redis_server)

        for _ in range(100):
            if await redis_clean():
                break
            await asyncio.sleep(0.05)  # poll: Redis writes are flushed asynchronously
        assert not hub_keys(redis_server), hub_keys(redis_server)[:10]
