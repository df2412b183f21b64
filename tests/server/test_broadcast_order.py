"""Hub-wide broadcasts are written once per loop turn for the whole hub (core/hub.py
``Batcher``, server/connection.py ``Flusher``): what a connection is sent on its own in the
same turn must keep its place among them, and a close must come after what preceded it.

Pipelined REST requests in one TCP write are handled in one loop turn, so the order of the
requests is the order each client must see."""

from __future__ import annotations

import asyncio
import random
import socket
import struct
from urllib.parse import urlsplit

import pytest

from tests.server.helpers import (
    TIMEOUT,
    client_token,
    client_url,
    connect_json,
    parse_http_response,
    raw_http,
    rest_url,
    sign_rest,
)
from webpubsub.server import connection as server_connection
from webpubsub.testing import ServiceThread


def pipelined(service: ServiceThread, requests: list[tuple[str, str, bytes]]) -> bytes:
    """One write holding every request (method, path, body); the last one closes."""
    out = b""
    for index, (method, path, body) in enumerate(requests):
        url = rest_url(service, path)
        target = url.split(service.endpoint.rstrip("/"), 1)[1]
        last = index == len(requests) - 1
        out += (
            f"{method} {target} HTTP/1.1\r\nHost: {service.settings.host}\r\n"
            f"Authorization: Bearer {sign_rest(url)}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if last else "") + "\r\n"
        ).encode() + body
    return out


def statuses(raw: bytes, count: int) -> list[int]:
    found = []
    rest = raw
    for _ in range(count):
        response = parse_http_response(rest)
        found.append(response.status)
        _, _, tail = rest.partition(b"\r\n\r\n")
        rest = tail[len(response.body) :]
    return found


async def test_own_frames_keep_their_place_among_broadcasts(
    service: ServiceThread, hub: str
) -> None:
    a = await connect_json(service, hub)
    b = await connect_json(service, hub)
    shuffle = random.Random(7)
    script: list[tuple[str, str]] = []
    for n in range(60):
        script.append((shuffle.choice(["all", "all", "a", "b"]), str(n)))
    requests = []
    for who, body in script:
        if who == "all":
            path = f"/api/hubs/{hub}/:send"
        else:
            conn = a if who == "a" else b
            path = f"/api/hubs/{hub}/connections/{conn.connection_id}/:send"
        requests.append(("POST", path, body.encode()))
    raw = await asyncio.to_thread(raw_http, service, pipelined(service, requests))
    assert statuses(raw, len(requests)) == [202] * len(requests)
    for client, me in ((a, "a"), (b, "b")):
        wanted = [body for who, body in script if who in ("all", me)]
        got = [(await client.receive())["data"] for _ in wanted]
        assert got == wanted
    await a.close()
    await b.close()


async def test_a_close_comes_after_the_broadcasts_before_it(
    service: ServiceThread, hub: str
) -> None:
    a = await connect_json(service, hub)
    requests = [("POST", f"/api/hubs/{hub}/:send", f"m{n}".encode()) for n in range(5)]
    requests.append(("DELETE", f"/api/hubs/{hub}/connections/{a.connection_id}", b""))
    requests.append(("POST", f"/api/hubs/{hub}/:send", b"after"))
    raw = await asyncio.to_thread(raw_http, service, pipelined(service, requests))
    assert statuses(raw, len(requests)) == [202] * 5 + [204, 202]
    code, _reason, frames = await a.until_closed()
    assert [f.get("data") for f in frames if f.get("type") == "message"] == [
        f"m{n}" for n in range(5)
    ]
    assert code == 1000


# Linux's SO_TIMESTAMPNS (also the control message type); Python does not name it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


def stamped(sock: socket.socket) -> None:
    """Have the kernel stamp each received packet (SO_TIMESTAMPNS)."""
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)


def recv_stamped(sock: socket.socket) -> tuple[bytes, int]:
    """What is waiting on ``sock`` and when the kernel received it (ns, CLOCK_REALTIME)."""
    data, ancdata, _flags, _addr = sock.recvmsg(65536, socket.CMSG_SPACE(16))
    for level, kind, value in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = struct.unpack("qq", value[:16])
            return data, seconds * 1_000_000_000 + nanoseconds
    raise AssertionError("no receive timestamp")


def raw_client(service: ServiceThread, hub: str) -> socket.socket:
    """A simple WebSocket client on a bare socket: nothing reads it but the test."""
    url = urlsplit(client_url(service, hub, token=client_token(service, hub)))
    sock = socket.create_connection((url.hostname or "", url.port or 80), timeout=TIMEOUT)
    sock.sendall(
        f"GET {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    stamped(sock)
    return sock


def test_a_broadcast_is_answered_once_every_connection_has_it(
    service: ServiceThread, hub: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Back-pressure (issue 16): the 202 of a send to all is written after the frame was
    handed to every connection's socket, even when the writes take many loop turns (one
    connection per turn here): the kernel's receive stamps show the order."""
    monkeypatch.setattr(server_connection, "ROUND_SLICE", 1)
    clients = [raw_client(service, hub) for _ in range(50)]
    publisher = socket.create_connection(
        (service.settings.host, service.settings.port), timeout=TIMEOUT
    )
    stamped(publisher)
    try:
        for n in range(3):
            path = f"/api/hubs/{hub}/:send"
            url = rest_url(service, path)
            target = url.split(service.endpoint.rstrip("/"), 1)[1]
            body = b"m%d" % n
            publisher.sendall(
                f"POST {target} HTTP/1.1\r\nHost: {service.settings.host}\r\n"
                f"Authorization: Bearer {sign_rest(url)}\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            answer, answered_at = recv_stamped(publisher)
            assert answer.startswith(b"HTTP/1.1 202"), answer
            for sock in clients:
                frame, received_at = recv_stamped(sock)
                assert frame == b"\x81\x02" + body
                assert received_at <= answered_at
    finally:
        publisher.close()
        for sock in clients:
            sock.close()
