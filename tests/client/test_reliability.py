"""Dropped connections against the real service: recovery (spec 4.7), reconnection with
rejoin, keep-alive (spec 4.9), and a restart of the service.

TCP connections are cut from either end without a closing handshake; partitions and
half-open links go through :class:`tests.client.helpers.Proxy`. Every wait is for an event.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.client.conftest import Connect
from tests.client.helpers import (
    PROTOCOLS,
    RELIABLE,
    Proxy,
    Recorder,
    access_url,
    drop_client_side,
    drop_server_side,
    on_service_disconnect,
    wait_threading_event,
)
from webpubsub.client import (
    ConnectedEvent,
    DisconnectedEvent,
    GroupMessage,
    ReconnectPolicy,
    WebPubSubClient,
)
from webpubsub.server.config import Limits, Settings
from webpubsub.testing import ServiceThread

FAST = ReconnectPolicy(initial_delay=0.02, max_delay=0.1, jitter=0)


@pytest.mark.parametrize("protocol", RELIABLE)
@pytest.mark.parametrize("side", ["client", "service"])
async def test_recovery_loses_and_duplicates_nothing(
    service: ServiceThread, connect: Connect, protocol: str, side: str
) -> None:
    # Sequence acks are held back, so every drop makes the service replay what the client
    # already has: the client must drop those, and get what was sent while it was away.
    bob = await connect("bob", protocol=protocol, sequence_ack_interval=60)
    alice = await connect("alice", protocol=protocol)
    inbox = Recorder(bob)
    await bob.join_group("room")
    connection_id = bob.connection_id
    assert connection_id is not None
    expected = []
    for round_ in range(4):
        for i in range(5):
            expected.append(f"{round_}.{i}")
            await alice.send_to_group("room", expected[-1], "text")
        # A message of this round came over a live socket (after the last drop, the
        # recovered one); the rest of the round may still be in flight when it dies.
        await inbox.until(GroupMessage, lambda m, r=round_: m.data.startswith(f"{r}."))
        if side == "client":
            drop_client_side(bob)
        else:
            drop_server_side(service, connection_id)
        expected.append(f"{round_}.while-away")
        await alice.send_to_group("room", expected[-1], "text")
    expected.append("last")
    await alice.send_to_group("room", "last", "text")
    await inbox.until(GroupMessage, lambda m: m.data == "last")
    assert [m.data for m in inbox.of(GroupMessage)] == expected
    assert bob.connection_id == connection_id
    assert inbox.of(DisconnectedEvent) == []
    assert inbox.of(ConnectedEvent) == []  # recovered: the same connection, no new event


@pytest.mark.parametrize("protocol", RELIABLE)
async def test_operations_across_drops_happen_once(connect: Connect, protocol: str) -> None:
    # Requests in flight when the socket dies are sent again with their ackIds after the
    # recovery; those the service had processed come back Duplicate (success), not twice.
    alice = await connect("alice", protocol=protocol)
    bob = await connect("bob", protocol=protocol)
    inbox = Recorder(bob)
    await bob.join_group("room")
    sends = []
    for i in range(30):
        sends.append(asyncio.ensure_future(alice.send_to_group("room", i, "json")))
        if i % 10 == 5:
            if i > 5:
                await sends[i - 9]  # made after the last drop: acked once recovered
            await asyncio.sleep(0)  # one loop turn: some requests are on the wire
            drop_client_side(alice)
    results = await asyncio.gather(*sends)
    assert sorted(r.ack_id for r in results) == list(range(1, 31))  # type: ignore[type-var]
    received = [m.data for m in await inbox.messages(GroupMessage, 30)]
    await alice.send_to_group("room", "marker", "text")
    assert (await inbox.next(GroupMessage)).data == "marker"
    assert sorted(received) == list(range(30))


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_closed_connection_reconnects_and_rejoins(
    service: ServiceThread, hub: str, protocol: str
) -> None:
    # The service ends the connection (a non-reliable drop, or 1008 for a reliable one):
    # the client opens a new one and rejoins its groups before `connected` fires.
    client = WebPubSubClient(access_url(service, hub), protocol=protocol, reconnect_policy=FAST)
    events = Recorder(client)
    async with client:
        await client.join_group("room")
        first = client.connection_id
        assert first is not None
        if ".reliable." in protocol:
            service.call(lambda: service.service.node.close_all(1008, "Closed by the test."))
        else:
            drop_server_side(service, first)
        disconnected = await events.next(DisconnectedEvent)
        assert disconnected.connection_id == first
        await events.next(ConnectedEvent)
        second = await events.next(ConnectedEvent)
        assert second.connection_id not in (None, first)
        await client.send_to_group("room", "after", "text")
        assert (await events.next(GroupMessage)).data == "after"


async def test_expired_recovery_reconnects_and_rejoins(hub: str) -> None:
    # A partition outlasts the service's recovery window: the recovery is refused (1008),
    # the client reconnects afresh and rejoins.
    limits = Limits(recovery_window=0.05)
    with ServiceThread(Settings(port=0, limits=limits)) as service:
        async with Proxy(service.settings.port) as proxy:
            url = access_url(service, hub, endpoint=proxy.endpoint)
            client = WebPubSubClient(url, recovery_delay=0.02, reconnect_policy=FAST)
            events = Recorder(client)
            async with client:
                await client.join_group("room")
                first = client.connection_id
                assert first is not None
                expired = on_service_disconnect(service, first)
                proxy.cut()
                await wait_threading_event(expired)
                proxy.heal()
                disconnected = await events.next(DisconnectedEvent)
                assert (disconnected.connection_id, disconnected.close_code) == (first, 1008)
                await events.next(ConnectedEvent)
                second = await events.next(ConnectedEvent)
                assert second.connection_id != first
                await client.send_to_group("room", "rejoined", "text")
                assert (await events.next(GroupMessage)).data == "rejoined"


async def test_client_gives_up_recovery_after_its_timeout(service: ServiceThread, hub: str) -> None:
    async with Proxy(service.settings.port) as proxy:
        url = access_url(service, hub, endpoint=proxy.endpoint)
        client = WebPubSubClient(
            url, recovery_timeout=0.1, recovery_delay=0.02, reconnect_policy=FAST
        )
        events = Recorder(client)
        async with client:
            first = client.connection_id
            proxy.cut()
            disconnected = await events.next(DisconnectedEvent)
            assert (disconnected.connection_id, disconnected.close_code) == (first, 1006)
            proxy.heal()
            await events.next(ConnectedEvent)
            assert (await events.next(ConnectedEvent)).connection_id != first


async def test_half_open_link_is_detected_by_keep_alive(service: ServiceThread, hub: str) -> None:
    # The link stays up but carries nothing: no close, no error. Only the silence tells.
    async with Proxy(service.settings.port) as proxy:
        url = access_url(service, hub, endpoint=proxy.endpoint)
        client = WebPubSubClient(url, keep_alive_interval=0.05, keep_alive_timeout=0.3)
        events = Recorder(client)
        async with client:
            await client.join_group("room")
            first = client.connection_id
            proxy.freeze()  # new links still work: the recovery goes through one
            await client.send_to_group("room", "through", "text")
            assert (await events.next(GroupMessage)).data == "through"
            assert client.connection_id == first
            assert events.of(DisconnectedEvent) == []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_auto_rejoin_after_a_service_restart(hub: str) -> None:
    port = _free_port()
    key = "restart-test-key-0123456789abcdefghijklmnop"
    first_service = ServiceThread(Settings(port=port, access_keys=[key])).start()
    urls = 0

    async def fetch_url() -> str:  # a fresh token for every connection, as an app server would
        nonlocal urls
        urls += 1
        return access_url(first_service, hub, f"user{urls}")

    client = WebPubSubClient(fetch_url, recovery_delay=0.02, reconnect_policy=FAST)
    events = Recorder(client)
    try:
        async with client:
            await client.join_group("room")
            await client.join_group("lobby")
            first = client.connection_id
            await asyncio.to_thread(first_service.stop)
            second_service = ServiceThread(Settings(port=port, access_keys=[key])).start()
            try:
                disconnected = await events.next(DisconnectedEvent)
                assert disconnected.connection_id == first
                assert disconnected.message == "Service is shutting down."
                await events.next(ConnectedEvent)
                connected = await events.next(ConnectedEvent)
                assert connected.connection_id != first and connected.user_id == "user2"
                assert set(client.joined_groups) == {"room", "lobby"}
                for group in ("room", "lobby"):
                    await client.send_to_group(group, group, "text")
                    assert (await events.next(GroupMessage)).group == group
            finally:
                await client.stop()
                await asyncio.to_thread(second_service.stop)
    finally:
        first_service.stop()
