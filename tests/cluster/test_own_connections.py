"""A node answers for the connections it holds, whatever Redis has been told yet.

Its connections are registered in Redis behind the handshake (the write is queued, not
waited for). An app server that checks or manages a client right after it connected,
through the node the client is on, must find it: here Redis is stopped (SIGSTOP, with a
``redis_timeout`` long enough that the node stays healthy), so the registration cannot
have landed, and the node still answers that the connection and its user exist.
"""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Node, RedisServer, free_port, require_redis_server
from .test_cluster import call, connect, sdk


@pytest.fixture
def stalled_later() -> Iterator[tuple[RedisServer, Node]]:
    require_redis_server()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config = workdir / "node.toml"
        config.write_text(
            "[cluster]\nnode_ttl = 60.0\nheartbeat_interval = 0.5\nredis_timeout = 30.0\n"
        )
        redis = RedisServer(free_port(), workdir)
        redis.start()
        node = Node(free_port(), config, redis.url)
        try:
            node.start()
            yield redis, node
        finally:
            if redis.process is not None:
                redis.process.send_signal(signal.SIGCONT)
            node.stop()
            redis.stop()


async def test_a_connection_exists_on_its_node_before_redis_has_it(
    stalled_later: tuple[RedisServer, Node],
) -> None:
    redis, node = stalled_later
    hub = "own"
    first, _ = await connect(node, hub, "early")  # the node now listens on the hub
    async with first:
        assert redis.process is not None
        redis.process.send_signal(signal.SIGSTOP)
        second, second_id = await connect(node, hub, "late")
        async with second:
            client = sdk(node, hub)
            assert await call(client.connection_exists, second_id)
            assert await call(client.user_exists, "late")
        redis.process.send_signal(signal.SIGCONT)
