"""Kill, stop and restart Redis and nodes under a steady REST load: nothing accepted is lost.

Each test runs three nodes on one Redis, clients on every node, and REST sends through
several nodes. After the fault, every message REST answered 202 must reach every client,
exactly once; the time from the end of the fault until REST accepts again is printed (the
figures in docs/reliability.md come from these lines).
"""

from __future__ import annotations

import asyncio
import signal
import time

import httpx

from .conftest import NODE_TTL, Cluster
from .load import Load, Receiver, receiver, rest

HUB = "faults"


async def clients(cluster: Cluster, hub: str = HUB) -> list[Receiver]:
    return [await receiver(node, hub, f"user{i}") for i, node in enumerate(cluster.nodes)]


async def check_delivery(load: Load, receivers: list[Receiver]) -> None:
    """Every accepted message at every client, none twice."""
    assert load.accepted, "the load had nothing accepted"
    for client in receivers:
        missing = await client.has(load.accepted)
        assert not missing, (
            f"{len(missing)} of {len(load.accepted)} accepted messages never reached the "
            f"client on {client.node.endpoint}: {sorted(missing)[:20]}"
        )
        twice = [i for i, n in client.got.items() if n > 1]
        assert not twice, f"delivered twice on {client.node.endpoint}: {twice[:20]}"


async def close(receivers: list[Receiver]) -> None:
    for client in receivers:
        await client.ws.close()


def report(fault: str, load: Load, back: float) -> None:
    print(
        f"\n[fault] {fault}: accepted {len(load.accepted)}, refused {dict(load.refused)}, "
        f"unanswered {load.unknown}, lost 0, REST accepting again after {back:.2f} s"
    )


async def test_redis_kill9_and_restart_under_rest_load(cluster: Cluster) -> None:
    receivers = await clients(cluster)
    load = Load(HUB, cluster.nodes)
    load.start()
    await load.accepted_since(0, 30)
    assert cluster.redis.process is not None
    cluster.redis.process.kill()
    cluster.redis.process.wait()
    cluster.redis.process = None
    await asyncio.sleep(1.0)  # the outage
    restarted = time.monotonic()
    cluster.restart_redis()
    # Only REST traffic: nodes must become healthy by themselves, not when a client writes.
    back = await load.accepted_since(restarted, 30)
    await load.stop()
    await check_delivery(load, receivers)
    report("Redis kill -9 and restart (empty)", load, back - restarted)
    await close(receivers)


async def test_redis_stalled_under_rest_load(cluster: Cluster) -> None:
    receivers = await clients(cluster)
    load = Load(HUB, cluster.nodes)
    load.start()
    await load.accepted_since(0, 30)
    assert cluster.redis.process is not None
    cluster.redis.process.send_signal(signal.SIGSTOP)
    await asyncio.sleep(3.0)  # longer than redis_timeout: batches fail and are retried
    resumed = time.monotonic()
    cluster.redis.process.send_signal(signal.SIGCONT)
    back = await load.accepted_since(resumed, 30)
    await load.stop()
    await check_delivery(load, receivers)
    report("Redis SIGSTOP 3 s", load, back - resumed)
    await close(receivers)


async def test_node_killed_under_rest_load(cluster: Cluster) -> None:
    receivers = await clients(cluster)
    load = Load(HUB, cluster.nodes[:2])
    load.start()
    await load.accepted_since(0, 30)
    victim = cluster.nodes[2]
    victim.kill()
    killed = time.monotonic()
    await load.accepted_since(killed, 30)
    await load.stop()
    await check_delivery(load, receivers[:2])
    async with httpx.AsyncClient(timeout=10) as http:
        gone = receivers[2].connection_id
        deadline = time.monotonic() + 4 * NODE_TTL
        while time.monotonic() < deadline:
            r = await rest(http, cluster.nodes[0], "HEAD", f"/api/hubs/{HUB}/connections/{gone}")
            if r.status_code == 404:
                break
            await asyncio.sleep(0.1)
        assert r.status_code == 404, "a dead node's connection stayed in the membership"
    await close(receivers[:2])


async def test_node_stalled_past_node_ttl_registers_again(cluster: Cluster) -> None:
    a, b, _ = cluster.nodes
    receivers = await clients(cluster)
    on_b = receivers[1]
    async with httpx.AsyncClient(timeout=10) as http:
        path = f"/api/hubs/{HUB}/connections/{on_b.connection_id}"
        assert (await rest(http, a, "HEAD", path)).status_code == 200
        b.signal(signal.SIGSTOP)
        # The others declare it dead and remove its connections.
        deadline = time.monotonic() + 6 * NODE_TTL
        while (await rest(http, a, "HEAD", path)).status_code != 404:
            assert time.monotonic() < deadline, "the stalled node was never declared dead"
            await asyncio.sleep(0.1)
        b.signal(signal.SIGCONT)
        resumed = time.monotonic()
        # On resume it notices and registers its live connections again.
        deadline = resumed + 6 * NODE_TTL
        while (await rest(http, a, "HEAD", path)).status_code != 200:
            assert time.monotonic() < deadline, "the resumed node never registered again"
            await asyncio.sleep(0.05)
        back = time.monotonic() - resumed
        # And the cluster treats its client as present again: group membership via REST.
        group_path = f"/api/hubs/{HUB}/groups/g/connections/{on_b.connection_id}"
        assert (await rest(http, a, "PUT", group_path)).status_code == 200
        r = await rest(http, a, "POST", f"/api/hubs/{HUB}/groups/g/:send", json={"i": -1})
        assert r.status_code == 202
        assert not await on_b.has({-1})
    print(f"\n[fault] node SIGSTOP past node_ttl: registered again {back:.2f} s after resuming")
    assert "registering its connections again" in b.log()
    await close(receivers)


async def test_a_command_a_node_cannot_apply_is_logged_and_skipped(cluster: Cluster) -> None:
    """A command that decodes but fails to apply (here: a lone surrogate where text goes,
    published straight into Redis) must not kill the reader that received it."""
    import redis.asyncio as aioredis

    hub = "poison"
    receivers = await clients(cluster, hub)
    poison = (
        b'intruder 1\n{"t":"send","to":["all"],"dt":"text","src":"group","g":"\\ud800"}\n'
        + b"payload"
    )
    r = aioredis.from_url(cluster.redis.url)
    try:
        await r.execute_command("SPUBLISH", f"wps:{{{hub}}}:commands", poison)
    finally:
        await r.aclose()
    load = Load(hub, cluster.nodes[:1])
    load.start(senders=1)
    await load.accepted_since(0, 10)
    await load.stop()
    await check_delivery(load, receivers)
    async with httpx.AsyncClient(timeout=10) as http:
        for node in cluster.nodes:
            assert (await http.get(f"{node.endpoint}/readyz")).status_code == 200
    assert any("could not apply a command" in node.log() for node in cluster.nodes)
    await close(receivers)
