"""Floods on the client endpoint: pings, joins, connections; and what they leave behind.

A flood must cost the flooder, not the service: answers the client does not read are cut
at the write-buffer limit (1013), joins stop at the group limit, and when the connections
go, every trace of them goes too.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import time

from tests.hardening.support import (
    JOIN,
    PING,
    PONG,
    SEND,
    TEXT,
    Census,
    RawWebSocket,
    assert_no_leaks,
    frame,
    running,
)
from tests.server.helpers import (
    JSON_SUBPROTOCOL,
    close_all,
    connect_json,
    connect_raw,
    parse_http_response,
    raw_http,
)
from webpubsub.core.connection import Connection
from webpubsub.core.observe import Observer
from webpubsub.core.requests import ClientRequest

HUB = "flood"


def test_ping_flood_is_answered_in_full() -> None:
    with running() as service:
        baseline = Census.take(service)
        with RawWebSocket(service, HUB, subprotocol=JSON_SUBPROTOCOL) as ws:
            assert ws.next_data() is not None  # connected
            count = 3000
            ws.send(b"".join(frame(PING, b"%d" % i) for i in range(count)))
            for i in range(count):
                received = ws.receive()
                assert received is not None and received.opcode == PONG, received
                assert received.payload == b"%d" % i
            ws.send(frame(TEXT, b'{"type":"ping"}'))
            assert ws.next_data().payload == b'{"type":"pong"}'  # type: ignore[union-attr]
        assert_no_leaks(service, baseline)


def test_ping_flood_from_a_client_that_does_not_read_is_cut() -> None:
    """Pongs are answers the flooder must read; unread, they hit the write-buffer limit."""
    with running(max_write_buffer=64 * 1024, close_timeout=0.5) as service:
        baseline = Census.take(service)
        ws = RawWebSocket(service, HUB, subprotocol=JSON_SUBPROTOCOL)
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        pings = b"".join(frame(PING, b"p" * 125) for _ in range(1000))
        for _ in range(200):  # up to 26 MB of pongs: far past every buffer on the way
            ws.send(pings)
            if Census.take(service).protocols == baseline.protocols:
                break
        else:
            raise AssertionError("the service kept buffering pongs nobody reads")
        ws.close()
        assert_no_leaks(service, baseline)


async def test_join_flood_stops_at_the_group_limit() -> None:
    with running(max_groups_per_connection=100) as service:
        baseline = Census.take(service)
        client = await connect_json(service, HUB, roles=[JOIN])
        first = 1000  # ackIds of their own: the client's counter numbers later requests
        for i in range(150):
            await client.send({"type": "joinGroup", "group": f"g{i}", "ackId": first + i})
        acks = [await client.ack(first + i) for i in range(150)]
        assert all(ack["success"] for ack in acks[:100])
        for ack in acks[100:]:
            assert ack["error"]["name"] == "BadRequest", ack
        hub = service.call(lambda: service.service.node.hubs[HUB])
        assert service.call(lambda: len(hub.groups)) == 100
        # Leaving and joining again stays within the limit; repeated joins are free.
        assert (await client.leave("g0"))["success"]
        assert (await client.join("g100"))["success"]
        assert (await client.join("g100"))["success"]
        assert not (await client.join("g101"))["success"]
        await client.close()
        assert_no_leaks(service, baseline)


async def test_many_clients_come_and_go_without_a_trace() -> None:
    """Clients that join, publish and leave (cleanly, abruptly, mid-frame, reliable ones
    after their recovery window) leave no connection, group, user, task or descriptor."""
    with running(recovery_window=0.3) as service:
        baseline = Census.take(service)
        roles = [JOIN, SEND]
        for _round in range(3):
            # The JSON clients publish to "all" but are not in it: a websockets client that
            # leaves messages unread stops reading, and its close would wait for a timeout.
            clients = [
                await connect_json(service, HUB, user_id=f"u{i % 7}", roles=roles, groups=["g"])
                for i in range(30)
            ]
            reliable = [
                await connect_json(
                    service,
                    HUB,
                    roles=roles,
                    groups=["all"],
                    subprotocols=["json.reliable.webpubsub.azure.v1"],
                )
                for _ in range(5)
            ]
            raws = [await connect_raw(service, HUB, groups=["all", "raw"]) for _ in range(10)]
            for i, client in enumerate(clients):
                assert (await client.join(f"own{i}"))["success"]
                assert (await client.publish("all", {"n": i}))["success"]
            for i, client in enumerate(clients):
                if i % 3 == 0:
                    await client.close()
                elif i % 3 == 1:
                    client.ws.transport.abort()
                else:
                    client.ws.transport.write(b"\x81\xfe\x00")  # half a frame header
                    client.ws.transport.abort()
            for client in reliable:
                client.ws.transport.abort()  # kept for the recovery window, then dropped
            for raw in raws:
                raw.transport.abort()
            await asyncio.to_thread(assert_no_leaks, service, baseline, 10.0)
            await close_all([*clients, *reliable, *raws])


async def test_message_flood_to_a_group_reaches_every_member() -> None:
    with running() as service:
        baseline = Census.take(service)
        members = [await connect_json(service, HUB, groups=["room"]) for _ in range(5)]
        sender = await connect_json(service, HUB, roles=[SEND])
        count = 500
        for i in range(count):
            await sender.send(
                {"type": "sendToGroup", "group": "room", "dataType": "text", "data": str(i)}
            )
        for member in members:
            for i in range(count):
                message = await member.receive()
                assert message["data"] == str(i), message
        await sender.send({"type": "ping"})
        assert json.dumps(await sender.receive()) == '{"type": "pong"}'
        await close_all([*members, sender])
        assert_no_leaks(service, baseline)


def test_steady_group_message_flood_without_ack_ids_is_cut_while_healthz_answers() -> None:
    """A no-role client floods sendToGroup with no ackId at ten times its rate, in chunks
    the refill keeps interrupting: every chunk gets a message allowed, which used to forgive
    the refusals before it, so it was never cut. Bounded by count, not by time."""
    rate, burst, chunk = 20, 10, 10
    with running(client_message_rate=rate, client_message_burst=burst) as service:
        baseline = Census.take(service)
        with RawWebSocket(service, HUB, subprotocol=JSON_SUBPROTOCOL) as ws:
            assert ws.next_data() is not None  # connected
            message = frame(TEXT, b'{"type":"sendToGroup","group":"room","data":{"x":1}}')
            closed = False
            for _ in range(200):  # at most 2,000 messages; the rule cuts after ~2 chunks
                ws.send(message * chunk)
                healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                assert parse_http_response(raw_http(service, healthz)).status == 200
                if select.select([ws.sock], [], [], 0)[0]:
                    closed = True
                    break
                time.sleep(chunk / rate / 10)  # ten times the rate: paces, asserts nothing
            assert closed, "the flood was never cut"
            code, frames = ws.until_closed()
        assert code == 1008, (code, frames)
        assert_no_leaks(service, baseline)


class Handled(Observer):
    """Counts the client requests the node handled (an observer, as metrics use)."""

    def __init__(self) -> None:
        self.count = 0

    def request_received(self, conn: Connection, request: ClientRequest, size: int) -> None:
        self.count += 1


def test_a_socket_delivering_many_messages_at_once_does_not_starve_the_others() -> None:
    """Tens of thousands of messages in a few reads: the service handles them a turn's
    budget at a time, so a health check sent meanwhile is answered before the flood is
    through (an order of events, not a duration)."""
    count = 40_000
    with running(client_message_rate=10**6, client_message_burst=count) as service:
        handled = Handled()
        service.call(lambda: service.service.node.observer.add(handled))
        with RawWebSocket(service, HUB, subprotocol=JSON_SUBPROTOCOL) as ws:
            assert ws.next_data() is not None
            ws.send(frame(TEXT, b'{"type":"ping"}') * count)
            assert ws.next_data() is not None  # the service is at work on the flood
            healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            assert parse_http_response(raw_http(service, healthz)).status == 200
            assert service.call(lambda: handled.count) < count
            for _ in range(count - 1):
                received = ws.next_data()
                assert received is not None and received.payload == b'{"type":"pong"}'
        assert service.call(lambda: handled.count) == count
