"""Group streams with this project's client (spec-next 2): ``open_group_stream`` on one
client, ``group_streams()`` on another, against the service."""

from __future__ import annotations

import asyncio

import pytest

from tests.client.conftest import Connect
from tests.client.helpers import PROTOCOLS
from webpubsub.client import GroupStreamError


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_stream_from_one_client_to_another(connect: Connect, protocol: str) -> None:
    reader = await connect("bob", protocol=protocol)
    await reader.join_group("live")
    streams = reader.group_streams("live")
    writer_client = await connect("alice", protocol=protocol)
    writer = await writer_client.open_group_stream("live", idle_timeout_ms=10_000)
    for part in ("a", "b"):
        await writer.write(part, "text")
    await writer.write({"n": 3}, "json")
    await writer.end()
    stream = await asyncio.wait_for(anext(streams), 5)
    assert (stream.group, stream.stream_id, stream.from_user_id) == (
        "live",
        writer.stream_id,
        "alice" if protocol.startswith("json.") else None,  # protobuf has no fromUserId
    )
    fragments = [m async for m in stream]
    assert [m.data for m in fragments] == ["a", "b", {"n": 3}]
    assert [m.stream.sequence_id for m in fragments if m.stream] == [1, 2, 3]
    assert writer.closed
    with pytest.raises(GroupStreamError):
        await writer.write("late", "text")
    streams.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_abort_reaches_readers_as_an_error(connect: Connect, protocol: str) -> None:
    reader = await connect("bob", protocol=protocol)
    await reader.join_group("live")
    streams = reader.group_streams()
    writer = await (await connect("alice", protocol=protocol)).open_group_stream("live")
    await writer.write("x", "text")
    await writer.abort("gave up", "E42")
    stream = await asyncio.wait_for(anext(streams), 5)
    assert (await anext(stream)).data == "x"
    with pytest.raises(GroupStreamError) as failed:
        await anext(stream)
    assert (failed.value.name, failed.value.message, failed.value.user_error_code) == (
        "UserError",
        "gave up",
        "E42",
    )


async def test_a_stream_without_permission_is_refused(connect: Connect) -> None:
    client = await connect("eve", roles=())
    with pytest.raises(GroupStreamError) as refused:
        await client.open_group_stream("live")
    assert refused.value.name == "Forbidden"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_service_closes_an_idle_stream(connect: Connect, protocol: str) -> None:
    writer = await (await connect("alice", protocol=protocol)).open_group_stream(
        "live", idle_timeout_ms=200
    )
    with pytest.raises(GroupStreamError) as closed:
        await asyncio.wait_for(writer.wait_closed(), 5)
    assert closed.value.name == "IdleTimeout"
