"""Connection limits are service-wide in a cluster: each node counts the others' too.

Nodes report their counts with their heartbeat, so the bound is approximate: a burst may
pass the limit by what the other nodes accept within one heartbeat interval.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.conftest import RedisServer, free_port
from tests.conftest import ACCESS_KEY
from tests.server.helpers import (
    JSON_SUBPROTOCOL,
    assert_refused,
    async_wait_until,
    client_token,
    client_url,
    close_all,
    connect_json,
    parse_http_response,
    raw_http,
    refused_handshake,
)
from webpubsub.server.config import Cluster, Limits, Settings
from webpubsub.testing import ServiceThread

HUB = "limits"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(free_port(), Path(workdir))
        server.start()
        try:
            yield server
        finally:
            server.stop()


def two_nodes(redis_server: RedisServer, **limits: int) -> tuple[ServiceThread, ServiceThread]:
    def settings() -> Settings:
        return Settings(
            port=0,
            access_keys=[ACCESS_KEY],
            redis_url=redis_server.url,
            limits=Limits(**limits),  # type: ignore[arg-type]
            cluster=Cluster(node_ttl=2.0, heartbeat_interval=0.2, redis_timeout=1.0),
        )

    return ServiceThread(settings()), ServiceThread(settings())


def peers(node: ServiceThread) -> tuple[int, int]:
    engine = node.service.engine
    assert engine is not None
    return engine.peer_connections(), engine.peer_hub_connections(HUB)


async def test_connections_per_hub_are_counted_across_nodes(redis_server: RedisServer) -> None:
    first, second = two_nodes(redis_server, max_connections_per_hub=3)
    with first, second:
        on_first = [await connect_json(first, HUB) for _ in range(2)]
        on_second = await connect_json(second, HUB)
        # The second node hears of the first node's two at its next heartbeat.
        await async_wait_until(lambda: peers(second)[1] == 2, "the first node's report")
        url = client_url(second, HUB, token=client_token(second, HUB))
        body = assert_refused(await refused_handshake(url, subprotocols=[JSON_SUBPROTOCOL]), 429)
        assert body["code"] == "Error.TooManyConnections"
        other = await connect_json(second, "another")  # other hubs are not affected
        await on_first[0].close()
        await async_wait_until(lambda: peers(second)[1] == 1, "the first node's new report")
        again = await connect_json(second, HUB)
        await close_all([*on_first[1:], on_second, other, again])


async def test_tcp_connections_are_counted_across_nodes(redis_server: RedisServer) -> None:
    first, second = two_nodes(redis_server, max_connections=4)
    with first, second:
        clients = [await connect_json(first, HUB) for _ in range(4)]  # the first node's all
        await async_wait_until(lambda: peers(second)[0] >= 4, "the first node's report")
        response = parse_http_response(raw_http(second, b"GET /api/health HTTP/1.1\r\n\r\n"))
        assert response.status == 503
        await close_all(clients)
        await async_wait_until(lambda: peers(second)[0] == 0, "the first node's new report")
        response = parse_http_response(
            raw_http(second, b"HEAD /api/health HTTP/1.1\r\nConnection: close\r\n\r\n")
        )
        assert response.status == 200
