"""The Sentinel master pool never hands out a connection to a former master.

Two real redis-servers stand for the former and the new master; a stand-in for the
sentinels names one, then the other. A connection in use when the master changes must
not come back out of the pool still connected to the former one (redis-py's asyncio pool
would hand it out again: after a SENTINEL FAILOVER a node re-subscribed or published to
the former master, alive and writable for seconds, and messages were lost).
"""

from __future__ import annotations

from contextlib import ExitStack

from redis.asyncio.sentinel import SentinelManagedConnection

from tests.cluster.conftest import running_redis
from webpubsub.engine.redis import SentinelMasterPool


class Sentinels:
    """Names ``master``; a test changes it, as a failover would."""

    def __init__(self, master: tuple[str, int]) -> None:
        self.master = master

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        return self.master


async def test_a_connection_released_after_a_failover_is_not_handed_out_again() -> None:
    with ExitStack() as stack:
        former = stack.enter_context(running_redis())
        new = stack.enter_context(running_redis())
        sentinels = Sentinels(("127.0.0.1", former.port))
        pool = SentinelMasterPool(
            "master", sentinels, connection_class=SentinelManagedConnection, max_connections=4
        )
        try:
            busy = await pool.get_connection()
            idle = await pool.get_connection()
            await pool.release(idle)
            assert (busy.host, busy.port) == ("127.0.0.1", former.port)
            sentinels.master = ("127.0.0.1", new.port)
            assert await pool.get_master_address() == ("127.0.0.1", new.port)
            await pool.release(busy)  # in use during the change: back to the pool now
            for _ in range(2):
                conn = await pool.get_connection()
                await conn.send_command("PING")
                assert await conn.read_response() in (b"PONG", "PONG")
                assert (conn.host, conn.port) == ("127.0.0.1", new.port)
        finally:
            await pool.disconnect()
