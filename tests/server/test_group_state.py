"""Group state (spec-next 5) over real sockets: ``setGroupState``, ``subscribeGroupState``
with its snapshot after the ack, updates, and entries cleared by a leave or a disconnect."""

from __future__ import annotations

import asyncio
from typing import Any

from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from tests.server.helpers import TIMEOUT, client_token, client_url, connect_json, rest_call
from webpubsub.protocols.proto.webpubsub_pb2 import DownstreamMessage, UpstreamMessage
from webpubsub.testing import ServiceThread

JOIN = ["webpubsub.joinLeaveGroup"]
RELIABLE = ("json.reliable.webpubsub.azure.v1",)


def items(frame: dict[str, Any]) -> list[tuple[str | None, Any]]:
    assert frame["group"] == "room"
    return [(item.get("userId"), item.get("state")) for item in frame["items"]]


async def test_snapshot_updates_and_clears(service: ServiceThread, hub: str) -> None:
    async with (
        await connect_json(service, hub, user_id="alice", roles=JOIN) as alice,
        await connect_json(service, hub, user_id="bob", roles=JOIN, subprotocols=RELIABLE) as bob,
    ):
        await alice.join("room")
        state = {"status": "typing"}
        ack = await alice.request({"type": "setGroupState", "group": "room", "state": state})
        assert ack["success"] is True
        ack = await bob.request({"type": "subscribeGroupState", "group": "room"})
        assert ack["success"] is True
        snapshot = await bob.receive()
        assert snapshot["type"] == "groupStateSnapshot" and "sequenceId" in snapshot
        assert items(snapshot) == [("alice", state)]
        first = snapshot["items"][0]["updatedAt"]
        await alice.request({"type": "setGroupState", "group": "room", "state": {"s": "idle"}})
        update = await bob.receive()
        assert update["type"] == "groupStateUpdate" and items(update) == [("alice", {"s": "idle"})]
        assert update["items"][0]["updatedAt"] > first
        await alice.request({"type": "setGroupState", "group": "room"})  # no state: cleared
        assert items(await bob.receive()) == [("alice", None)]
        await alice.request({"type": "setGroupState", "group": "room", "state": {"a": "1"}})
        await bob.receive()
        await alice.leave("room")  # a member that leaves loses its entry
        assert items(await bob.receive()) == [("alice", None)]
        await alice.join("room")
        await alice.request({"type": "setGroupState", "group": "room", "state": {"a": "2"}})
        await bob.receive()
        await bob.request({"type": "unsubscribeGroupState", "group": "room"})
        await alice.request({"type": "setGroupState", "group": "room", "state": {"a": "3"}})
        await bob.request({"type": "subscribeGroupState", "group": "room"})
        assert items(await bob.receive()) == [("alice", {"a": "3"})]  # nothing in between
        await alice.close()
        assert items(await bob.receive()) == [("alice", None)]  # its connection ended


async def test_refusals(service: ServiceThread, hub: str) -> None:
    async with await connect_json(service, hub, roles=()) as client:
        ack = await client.request({"type": "setGroupState", "group": "room", "state": {"a": "1"}})
        assert (ack["success"], ack["error"]["name"]) == (False, "BadRequest")  # not a member
        ack = await client.request({"type": "subscribeGroupState", "group": "room"})
        assert ack["error"]["name"] == "Forbidden"
    async with await connect_json(service, hub, groups=["room"]) as member:
        bad = {"type": "setGroupState", "group": "room", "state": {"a": 1}}
        assert (await member.request(bad))["error"]["name"] == "BadRequest"
        bad = {"type": "setGroupState", "group": "room", "state": ["a"]}
        assert (await member.request(bad))["error"]["name"] == "BadRequest"


async def test_a_rest_removal_clears_the_entry(service: ServiceThread, hub: str) -> None:
    async with (
        await connect_json(service, hub, user_id="alice", groups=["room"]) as alice,
        await connect_json(service, hub, roles=JOIN) as watcher,
    ):
        await alice.request({"type": "setGroupState", "group": "room", "state": {"a": "1"}})
        await watcher.request({"type": "subscribeGroupState", "group": "room"})
        assert items(await watcher.receive()) == [("alice", {"a": "1"})]
        path = f"/api/hubs/{hub}/groups/room/connections/{alice.connection_id}"
        response = await asyncio.to_thread(rest_call, service, "DELETE", path)
        assert response.status_code in (200, 204)
        assert items(await watcher.receive()) == [("alice", None)]


async def test_protobuf_reliable(service: ServiceThread, hub: str) -> None:
    """spec-next 8: the same frames in protobuf; snapshot and update carry sequence ids."""
    token = client_token(service, hub, user_id="carol", roles=JOIN, groups=["room"])
    async with connect(
        client_url(service, hub, token=token),
        subprotocols=[Subprotocol("protobuf.reliable.webpubsub.azure.v1")],
        open_timeout=TIMEOUT,
    ) as ws:

        async def receive() -> DownstreamMessage:
            return DownstreamMessage.FromString(await asyncio.wait_for(ws.recv(), TIMEOUT))

        assert (await receive()).WhichOneof("message") == "system_message"
        set_state = UpstreamMessage.SetGroupStateMessage(group="room", ack_id=1)
        set_state.state.entries["s"] = "on"
        await ws.send(UpstreamMessage(set_group_state_message=set_state).SerializeToString())
        assert (await receive()).ack_message.success
        watch = UpstreamMessage.SubscribeGroupStateMessage(group="room", ack_id=2)
        await ws.send(UpstreamMessage(subscribe_group_state_message=watch).SerializeToString())
        assert (await receive()).ack_message.ack_id == 2
        snapshot = (await receive()).group_state_snapshot_message
        assert [(i.user_id, dict(i.state.entries)) for i in snapshot.items] == [
            ("carol", {"s": "on"})
        ]
        clear = UpstreamMessage.SetGroupStateMessage(group="room", ack_id=3)
        await ws.send(UpstreamMessage(set_group_state_message=clear).SerializeToString())
        frames = [await receive(), await receive()]
        [update] = [
            f.group_state_update_message for f in frames if f.HasField("group_state_update_message")
        ]
        assert not update.items[0].HasField("state")
        assert update.sequence_id == snapshot.sequence_id + 1
