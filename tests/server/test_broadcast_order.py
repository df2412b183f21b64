"""Hub-wide broadcasts are written once per loop turn for the whole hub (core/hub.py
``Batcher``, server/connection.py ``Flusher``): what a connection is sent on its own in the
same turn must keep its place among them, and a close must come after what preceded it.

Pipelined REST requests in one TCP write are handled in one loop turn, so the order of the
requests is the order each client must see."""

from __future__ import annotations

import asyncio
import random

from tests.server.helpers import (
    connect_json,
    parse_http_response,
    raw_http,
    rest_url,
    sign_rest,
)
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
