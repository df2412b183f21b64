"""Group state with this project's client (spec-next 5): ``set_group_state`` on one client,
``subscribe_group_state`` and ``group-states-changed`` on another, on every subprotocol."""

from __future__ import annotations

import asyncio

import pytest

from tests.client.conftest import Connect
from tests.client.helpers import (
    PROTOCOLS,
    RELIABLE,
    Recorder,
    access_url,
    drop_client_side,
    drop_server_side,
)
from webpubsub.client import (
    DisconnectedEvent,
    GroupStates,
    InvalidMessage,
    ReconnectPolicy,
    WebPubSubClient,
)
from webpubsub.testing import ServiceThread


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_snapshot_then_updates(connect: Connect, protocol: str) -> None:
    alice = await connect("alice", protocol=protocol)
    await alice.join_group("room")
    await alice.set_group_state("room", {"status": "typing"})
    bob = await connect("bob", protocol=protocol)
    changes: asyncio.Queue[GroupStates] = asyncio.Queue()
    bob.on("group-states-changed", changes.put_nowait)
    await bob.subscribe_group_state("room")
    snapshot = await asyncio.wait_for(changes.get(), 5)
    assert snapshot.snapshot and snapshot.group == "room"
    assert [(e.user_id, e.state) for e in snapshot.items] == [("alice", {"status": "typing"})]
    await alice.set_group_state("room", None)
    update = await asyncio.wait_for(changes.get(), 5)
    assert not update.snapshot
    assert [(e.connection_id, e.state) for e in update.items] == [(alice.connection_id, None)]
    assert update.items[0].updated_at > snapshot.items[0].updated_at
    await bob.unsubscribe_group_state("room")
    with pytest.raises(InvalidMessage):
        await bob.set_group_state("room", {"a": "1"})  # not a member


@pytest.mark.parametrize("protocol", RELIABLE)
async def test_updates_survive_a_recovery_once_each(connect: Connect, protocol: str) -> None:
    """Snapshot and updates are sequenced data: after a drop the service replays what the
    client did not acknowledge, the client drops what it had, and the subscription and
    entries live on (the same logical connection)."""
    watcher = await connect("bob", protocol=protocol, sequence_ack_interval=60)
    member = await connect("alice", protocol=protocol)
    await member.join_group("room")
    inbox = Recorder(watcher)
    await watcher.subscribe_group_state("room")
    connection_id = watcher.connection_id
    assert connection_id is not None
    for round_ in range(3):
        await member.set_group_state("room", {"n": str(round_)})
        await inbox.until(
            GroupStates, lambda s, r=round_: [e.state for e in s.items] == [{"n": str(r)}]
        )
        drop_client_side(watcher)
        await member.set_group_state("room", {"n": f"{round_}.away"})
    await member.set_group_state("room", {"n": "last"})
    await inbox.until(GroupStates, lambda s: [e.state for e in s.items] == [{"n": "last"}])
    seen = [e.state["n"] for s in inbox.of(GroupStates) for e in s.items if e.state]
    assert seen == ["0", "0.away", "1", "1.away", "2", "2.away", "last"]
    assert watcher.connection_id == connection_id


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_new_connection_subscribes_again(
    service: ServiceThread, hub: str, protocol: str
) -> None:
    """After a reconnect (a new connection, its subscriptions gone with the old one) the
    client subscribes again and gets a fresh snapshot, as the newer JS client does."""
    member = WebPubSubClient(access_url(service, hub, "alice"), protocol=protocol)
    watcher = WebPubSubClient(
        access_url(service, hub, "bob"),
        protocol=protocol,
        reconnect_policy=ReconnectPolicy(initial_delay=0.02, max_delay=0.1, jitter=0),
    )
    async with member, watcher:
        inbox = Recorder(watcher)
        await member.join_group("room")
        await member.set_group_state("room", {"n": "1"})
        await watcher.subscribe_group_state("room")
        assert (await inbox.next(GroupStates)).snapshot
        first = watcher.connection_id
        assert first is not None
        if ".reliable." in protocol:
            service.call(
                lambda: service.service.node.close(
                    service.service.node.hubs[hub.lower()].connections[first], 1008, "test"
                )
            )
        else:
            drop_server_side(service, first)
        await inbox.next(DisconnectedEvent)
        again = await inbox.next(GroupStates)
        assert again.snapshot and [e.state for e in again.items] == [{"n": "1"}]
        assert watcher.connection_id != first
        await member.set_group_state("room", {"n": "2"})
        update = await inbox.next(GroupStates)
        assert [e.state for e in update.items] == [{"n": "2"}]
