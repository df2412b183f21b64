"""Group state with this project's client (spec-next 5): ``set_group_state`` on one client,
``subscribe_group_state`` and ``group-states-changed`` on another, on every subprotocol."""

from __future__ import annotations

import asyncio

import pytest

from tests.client.conftest import Connect
from tests.client.helpers import PROTOCOLS
from webpubsub.client import GroupStates, InvalidMessage


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
