"""A new connection is visible where an app server may look for it.

A node registers its connections in Redis behind the handshake (the write is queued, not
waited for). Here Redis is stopped (SIGSTOP, with a ``redis_timeout`` long enough that the
nodes stay healthy), so a registration cannot land until it resumes:

* the node holding a connection answers for it itself (exists, user exists);
* the ``connected`` event waits for the registration, so an app server that answers it
  through another node (a REST call behind a load balancer) finds the connection.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import pytest

from tests.upstream_app import UpstreamApp

from .conftest import Node, RedisServer, running_cluster
from .test_cluster import call, connect, sdk

SETTINGS = "[cluster]\nnode_ttl = 60.0\nheartbeat_interval = 0.5\nredis_timeout = 30.0\n"


@pytest.fixture
def stalled_later() -> Iterator[tuple[RedisServer, Node]]:
    with running_cluster(SETTINGS, 1) as running:
        yield running.redis, running.nodes[0]


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


async def test_connected_is_sent_once_the_other_nodes_see_the_connection() -> None:
    hub = "seen"
    with UpstreamApp() as app:
        handlers = (
            f'[[hubs.{hub}.event_handlers]]\nurl_template = "{app.url_template}"\n'
            'system_events = ["connected"]\n'
        )
        with running_cluster(SETTINGS + handlers, 2) as running:
            redis, (a, b) = running.redis, running.nodes
            assert redis.process is not None
            first, _ = await connect(a, hub, "early")  # a now listens on the hub
            async with first:
                await asyncio.to_thread(
                    app.wait_for, lambda seen: len(app.events("connected")) == 1
                )
                redis.process.send_signal(signal.SIGSTOP)
                late, late_id = await connect(a, hub, "late")
                async with late:
                    # Not while its registration cannot reach Redis (a bounded look: the
                    # event, if sent, would arrive within milliseconds).
                    with pytest.raises(AssertionError):
                        await asyncio.to_thread(
                            app.wait_for, lambda seen: len(app.events("connected")) == 2, 1.0
                        )
                    redis.process.send_signal(signal.SIGCONT)
                    await asyncio.to_thread(
                        app.wait_for, lambda seen: len(app.events("connected")) == 2
                    )
                    event = app.events("connected")[1]
                    assert event.headers["ce-connectionid"] == late_id
                    # What an app server would do with it, through the other node.
                    assert await call(sdk(b, hub).connection_exists, late_id)
