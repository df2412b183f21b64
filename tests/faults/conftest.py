"""Fault injection: a real redis-server and three ``webpubsub serve`` processes.

The tests kill, stop and restart Redis and nodes while a REST load runs, and count every
message that REST accepted (202) at the clients of every node. Each node writes its log to a
file, so a test can also check what an operator would read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.cluster.conftest import Node, RedisServer, running_cluster

NODE_TTL = 2.0
CONFIG = f"""
[cluster]
node_ttl = {NODE_TTL}
heartbeat_interval = 0.5
redis_timeout = 1.0
publish_timeout = 3.0
"""


@dataclass
class Cluster:
    redis: RedisServer
    nodes: list[Node]

    def restart_redis(self) -> None:
        """A fresh, empty Redis on the same port (as after a crash without persistence)."""
        self.redis.start()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    with running_cluster(CONFIG, logs=True) as running:
        yield Cluster(running.redis, running.nodes)
