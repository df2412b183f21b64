"""Message TTL (spec-next 4): a message not handed to the kernel within its TTL is dropped.

No fixed sleeps: a message is made to wait (in a reliable buffer while the socket is cut,
or behind a client that does not read) and the test waits until its expiry, read from the
service, has passed.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
import websockets

from tests.conftest import ACCESS_KEY
from tests.hardening.support import RawWebSocket
from tests.server.helpers import (
    TIMEOUT,
    assert_error_detail,
    async_wait_until,
    client_token,
    client_url,
    connect_json,
    rest_send,
    wait_until,
)
from webpubsub.server.config import Settings
from webpubsub.testing import ServiceThread

RELIABLE = "json.reliable.webpubsub.azure.v1"


def expiries(service: ServiceThread, hub: str, connection_id: str) -> list[float | None]:
    """TTL ends of what waits in a reliable connection's resend buffer."""

    def read() -> list[float | None]:
        conn = service.service.node.find_connection(hub.lower(), connection_id)
        assert conn is not None and conn.recovery is not None
        return [expires for _, expires in conn.recovery.buffer.pending()]

    return service.call(read)


async def test_expired_messages_are_not_replayed_after_a_cut(
    service: ServiceThread, hub: str
) -> None:
    token = client_token(service, hub, roles=["webpubsub.sendToGroup"], groups=["g"])
    ws = await websockets.connect(
        client_url(service, hub, token=token),
        subprotocols=[RELIABLE],  # type: ignore[list-item]
    )
    connected = json.loads(await ws.recv())
    connection_id, reconnect = connected["connectionId"], connected["reconnectionToken"]
    async with await connect_json(
        service, hub, groups=["g"], roles=["webpubsub.sendToGroup"]
    ) as live:
        ws.transport.abort()  # a cut: no close frame, the connection waits for recovery

        def detached() -> bool:
            conn = service.service.node.find_connection(hub.lower(), connection_id)
            return conn is not None and conn.recovery is not None and not conn.recovery.attached

        await async_wait_until(lambda: service.call(detached), "the service saw the cut")
        query = [("messageTtlSeconds", "1")]
        assert rest_send(service, hub, "groups/g", b"a", query=query).status_code == 202
        assert rest_send(service, hub, "groups/g", b"b").status_code == 202
        long = [("messageTtlSeconds", "300")]
        assert rest_send(service, hub, "groups/g", b"c", query=long).status_code == 202
        ack = await live.request(
            {"type": "sendToGroup", "group": "g", "dataType": "text", "data": "d", "ttlSeconds": 1}
        )
        assert ack["success"] is True
        # A live member gets everything at once: a TTL never delays a message.
        assert [(await live.receive())["data"] for _ in range(4)] == ["a", "b", "c", "d"]

        waiting = expiries(service, hub, connection_id)
        assert len(waiting) == 4 and waiting[1] is None
        deadline = max(e for e in waiting if e is not None and e < time.time() + 60)
        await async_wait_until(lambda: time.time() > deadline, "the 1 s TTLs to pass")

        recovered = await websockets.connect(
            client_url(
                service,
                hub,
                token=token,
                query=[
                    ("awps_connection_id", connection_id),
                    ("awps_reconnection_token", reconnect),
                ],
            ),
            subprotocols=[RELIABLE],  # type: ignore[list-item]
        )
        again = json.loads(await recovered.recv())
        assert (again["event"], again["connectionId"]) == ("connected", connection_id)
        got = [json.loads(await recovered.recv()) for _ in range(2)]
        assert [(m["data"], m["sequenceId"]) for m in got] == [("b", 2), ("c", 3)]
        # Nothing else was waiting: the next message is a new one.
        assert rest_send(service, hub, "groups/g", b"after").status_code == 202
        after = json.loads(await recovered.recv())
        assert (after["data"], after["sequenceId"]) == ("after", 5)
        await recovered.close()


def test_expired_messages_behind_a_client_that_does_not_read() -> None:
    """A message queued while the kernel's buffers for a client are full, and past its TTL
    when they drain, is dropped; what has no TTL is delivered in order."""
    settings = Settings(port=0, access_keys=[ACCESS_KEY])
    with ServiceThread(settings) as service:
        hub = "ttlslow"
        with RawWebSocket(service, hub, subprotocol="json.webpubsub.azure.v1") as client:
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            connected = client.next_data()
            assert connected is not None
            connection_id = json.loads(connected.payload)["connectionId"]

            def kernel_full() -> bool:
                conn = service.service.node.find_connection(hub, connection_id)
                assert conn is not None
                return bool(conn.transport._kernel_full)  # type: ignore[attr-defined]

            big = b"x" * 500_000
            to = f"connections/{connection_id}"
            sent = 0
            while not service.call(kernel_full):
                assert sent < 30, "the kernel never filled up"
                assert rest_send(service, hub, to, big).status_code == 202
                sent += 1
            query = [("messageTtlSeconds", "1")]
            started = time.time()
            assert rest_send(service, hub, to, b"late", query=query).status_code == 202
            assert rest_send(service, hub, to, b"kept").status_code == 202
            wait_until(lambda: time.time() > started + 1.05, "the TTL to pass", timeout=TIMEOUT)
            assert service.call(kernel_full), "the client drained without reading"
            received: list[Any] = []
            while True:
                data = client.next_data()
                assert data is not None
                message = json.loads(data.payload)
                if message["data"] == "kept":
                    break
                received.append(message["data"])
            assert received == ["x" * 500_000] * sent  # and no "late"


@pytest.mark.parametrize("ttl", [-1, 301, 1.5, "5", True, None])
async def test_bad_client_ttl_is_a_bad_request(service: ServiceThread, hub: str, ttl: Any) -> None:
    async with await connect_json(
        service, hub, groups=["g"], roles=["webpubsub.sendToGroup"]
    ) as client:
        frame = {
            "type": "sendToGroup",
            "group": "g",
            "dataType": "text",
            "data": "x",
            "ttlSeconds": ttl,
        }
        ack = await client.request(frame)
        if ttl is None:  # null: no TTL
            assert ack["success"] is True
            assert (await client.receive())["data"] == "x"
        else:
            assert ack["error"]["name"] == "BadRequest", ack
        assert (await client.publish("g", "alive", "text"))["success"] is True
        assert (await client.receive())["data"] == "alive"


@pytest.mark.parametrize("ttl", ["301", "-1", "1.5", "abc", " 5", "+5", "1_0"])
def test_bad_rest_ttl_is_a_400(service: ServiceThread, hub: str, ttl: str) -> None:
    assert_error_detail(rest_send(service, hub, query=[("messageTtlSeconds", ttl)]), 400)


def test_rest_ttl_bounds(service: ServiceThread, hub: str) -> None:
    for ttl in ("0", "300"):
        assert rest_send(service, hub, query=[("messageTtlSeconds", ttl)]).status_code == 202
