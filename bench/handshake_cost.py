"""What one handshake costs in Python, with no sockets: the service's share of a handshake.

    .venv/bin/python -m bench.handshake_cost [COUNT]

Starts a service (in memory, its port bound but unused) and drives COUNT upgrades of the
bench's shape through its connection protocol directly: the request parsed, the token
checked, the connection registered and greeted, the 101 and the greeting written to a
transport that keeps them. The kernel's part (accept, read, write) is left out, so this
plus ``bench.handshake_floor``'s figure is about what ``make bench`` sees. The cyclic GC is
set as ``webpubsub serve`` sets it. Under ``valgrind --tool=callgrind`` the difference of two
counts gives instructions per handshake, a figure the VM's noise does not move.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from typing import Any

import uvloop

from webpubsub.server.app import Service
from webpubsub.server.config import Settings
from webpubsub.server.connection import ServiceProtocol

from .run import HUB, jwt_hs256

KEY = "k" * 32
GROUPS = 100
WARM_UP = 500
BATCH = 100  # upgrades per loop turn, then one turn for the writes


class KeptTransport(asyncio.Transport):
    """A transport that keeps what is written: the other end of one upgrade."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def upgrades(port: int) -> list[bytes]:
    """One upgrade request per group, as bench/loadgen.c sends them."""
    now = int(time.time())
    requests = []
    for group in range(GROUPS):
        claims = {
            "aud": f"http://127.0.0.1:{port}/client/hubs/{HUB}",
            "iat": now,
            "exp": now + 3600,
            "webpubsub.group": [f"g{group}"],
        }
        requests.append(
            (
                f"GET /client/hubs/{HUB}?access_token={jwt_hs256(claims, KEY)} HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
    return requests


async def measure(count: int) -> float:
    """Seconds per handshake over ``count`` upgrades, after a warm-up."""
    settings = Settings(port=0, access_keys=[KEY])
    service = Service(settings)
    await service.start()
    requests = upgrades(settings.port)
    kept: list[tuple[ServiceProtocol, KeptTransport]] = []

    async def run(n: int, start: int) -> None:
        for i in range(n):
            protocol, transport = ServiceProtocol(service), KeptTransport()
            protocol.connection_made(transport)
            protocol.data_received(requests[(start + i) % GROUPS])
            kept.append((protocol, transport))
        await asyncio.sleep(0)

    await run(WARM_UP, 0)
    answer = b"".join(kept[0][1].written)
    if not answer.startswith(b"HTTP/1.1 101 "):
        raise SystemExit(f"the upgrade was not accepted: {answer[:200]!r}")
    began = time.perf_counter()
    for start in range(0, count, BATCH):
        await run(min(BATCH, count - start), start)
    elapsed = time.perf_counter() - began
    hub = service.node.hub(HUB)
    registered = len(hub.connections) if hub is not None else 0
    if registered != WARM_UP + count:
        raise SystemExit(f"{registered} connections registered, {WARM_UP + count} expected")
    return elapsed / count


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)  # as webpubsub serve does
    per = uvloop.run(measure(count))
    print(f"{per * 1e6:.1f} µs per handshake in Python ({1 / per:,.0f}/s), {count:,} upgrades")


if __name__ == "__main__":
    main()
