"""Soak: thousands of WebSocket clients opening and closing in a loop while messages flow.

    python bench/soak.py                      # 10,000 connections, 3 cycles of 60 s churn
    python bench/soak.py --short --check      # 300 connections, 2 cycles of 3 s (CI)

The service runs in a child process (this file with ``--serve``) that also answers
``GET /_soak/stats``: resident memory (also after handing free C-heap pages back to the
system), open file descriptors, asyncio tasks, live Python objects (after a full
collection), TCP connections and hub entries. After a warm-up (everyone connects and leaves
once), each of ``--cycles`` cycles opens ``--connections`` clients, then for ``--duration``
seconds replaces ``--churn`` of them per second (some close cleanly, some vanish without a
close frame, some in the middle of a frame) while REST publishes to groups and to everyone
and clients publish to their groups; then every client leaves.

It reports, and with ``--check`` asserts, that after every cycle tasks, descriptors,
connections, users, groups and recovering connections are back to where they were before the
first, live objects too (within 2%), objects at full load do not grow during the churn,
and memory at rest does not keep rising from one cycle to the next.

Only 127.0.0.1 is used; every phase has a deadline and the whole run ``--timeout``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import resource
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from webpubsub.auth.tokens import mint_client_token, mint_rest_token  # noqa: E402

KEY = "soak-access-key-0123456789abcdefghijklmnopqrstuvw"
HUB = "soak"
HOST = "127.0.0.1"
STATS = "/_soak/stats"
JSON_PROTOCOL = "json.webpubsub.azure.v1"


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- the service (child process) ------------------------------------------------------------


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def trim_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc), so RSS shows what is used
    rather than what the allocator keeps for later."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)


async def serve(connections: int) -> None:
    from webpubsub.server.app import Service
    from webpubsub.server.config import Limits, Settings
    from webpubsub.server.http import HttpRequest, HttpResponse

    limits = Limits(
        max_connections=connections * 2 + 100,
        max_connections_per_hub=connections * 2,
        shutdown_grace=2.0,
    )
    service = Service(Settings(host=HOST, port=0, access_keys=[KEY], limits=limits))

    async def stats(request: HttpRequest) -> HttpResponse:
        gc.collect()
        node = service.node
        hubs = node.hubs.values()
        rss = rss_kb()
        trim_heap()
        return HttpResponse.json(
            200,
            {
                "rss_kb": rss,
                "rss_trimmed_kb": rss_kb(),
                "fds": len(os.listdir("/proc/self/fd")),
                "tasks": len(asyncio.all_tasks()),
                "objects": len(gc.get_objects()),
                "protocols": len(service.protocols),
                "connections": sum(len(hub.connections) for hub in hubs),
                "groups": sum(len(hub.groups) for hub in hubs),
                "users": sum(len(hub.users) for hub in hubs),
                "recovering": len(node.recovering),
            },
        )

    service.pages[STATS] = stats
    await service.start()
    print(service.settings.port, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await service.stop()


# -- clients ----------------------------------------------------------------------------------


def masked(opcode: int, payload: bytes) -> bytes:
    """A final client frame with a zero masking key (legal, and free to apply)."""
    length = len(payload)
    if length < 126:
        head = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    return head + b"\x00\x00\x00\x00" + payload


CLOSE_FRAME = masked(0x8, (1000).to_bytes(2, "big"))


@dataclass
class Totals:
    opened: int = 0
    refused: int = 0
    closed_clean: int = 0
    closed_abrupt: int = 0
    closed_mid_frame: int = 0
    messages_received: int = 0
    client_publishes: int = 0
    rest_publishes: int = 0
    rest_errors: int = 0
    unexpected_closes: int = 0


class Client(asyncio.Protocol):
    """A minimal JSON-subprotocol client: handshake, count messages, answer pings."""

    def __init__(self, request: bytes, totals: Totals) -> None:
        self.request = request
        self.totals = totals
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.opened: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.leaving = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_result(False)
        if not self.done.done():
            self.done.set_result(None)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            ok = buffer.startswith(b"HTTP/1.1 101")
            del buffer[: end + 4]
            self.upgraded = ok
            self.opened.set_result(ok)
            if not ok:
                self.totals.refused += 1
                self.transport.close()  # type: ignore[union-attr]
                return
        offset = 0
        while len(buffer) - offset >= 2:
            opcode = buffer[offset] & 0x0F
            length = buffer[offset + 1] & 0x7F
            start = offset + 2
            if length == 126:
                if len(buffer) - offset < 4:
                    break
                length = int.from_bytes(buffer[offset + 2 : offset + 4], "big")
                start = offset + 4
            elif length == 127:
                if len(buffer) - offset < 10:
                    break
                length = int.from_bytes(buffer[offset + 2 : offset + 10], "big")
                start = offset + 10
            if len(buffer) < start + length:
                break
            if opcode in (0x1, 0x2):
                self.totals.messages_received += 1
            elif opcode == 0x9:
                self.transport.write(masked(0xA, bytes(buffer[start : start + length])))  # type: ignore[union-attr]
            elif opcode == 0x8:
                code = int.from_bytes(buffer[start : start + 2], "big") if length >= 2 else 1005
                if not self.leaving:
                    self.totals.unexpected_closes += 1
                if code != 1000 and self.leaving:
                    self.totals.unexpected_closes += 1
                self.transport.close()  # type: ignore[union-attr]
            offset = start + length
        del buffer[:offset]

    def send(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(masked(0x1, payload))

    async def leave(self, how: str) -> None:
        """Go away: ``clean`` (close handshake), ``abrupt`` (reset), ``mid_frame``."""
        self.leaving = True
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if how == "clean":
            transport.write(CLOSE_FRAME)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.done), 5)
            transport.close()
        elif how == "mid_frame":
            transport.write(b"\x81\xfe\x00")  # the start of a frame header, never finished
            transport.abort()
        else:
            transport.abort()


class Load:
    """Opens, replaces and closes clients; publishes through REST; measures the service."""

    def __init__(self, port: int, groups: int, totals: Totals) -> None:
        self.port = port
        self.groups = groups
        self.totals = totals
        self.endpoint = f"http://{HOST}:{port}"
        self.clients: list[Client] = []
        audience = f"{self.endpoint}/client/hubs/{HUB}"
        # A pool of tokens: minting one per connection would measure PyJWT, not the service.
        self.requests = []
        for i in range(max(groups, 1) * 4):
            token = mint_client_token(
                KEY,
                audience,
                user_id=f"user{i}",
                roles=["webpubsub.sendToGroup"],
                groups=[f"g{i % groups}"],
            )
            self.requests.append(
                (
                    f"GET /client/hubs/{HUB}?access_token={token} HTTP/1.1\r\n"
                    f"Host: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: c29hay1zb2FrLXNvYWstMQ==\r\nSec-WebSocket-Version: 13\r\n"
                    f"Sec-WebSocket-Protocol: {JSON_PROTOCOL}\r\n\r\n"
                ).encode()
            )

    async def open_one(self) -> Client | None:
        loop = asyncio.get_running_loop()
        request = random.choice(self.requests)
        try:
            _, client = await loop.create_connection(
                lambda: Client(request, self.totals), HOST, self.port
            )
        except OSError:
            self.totals.refused += 1
            return None
        try:
            ok = await asyncio.wait_for(client.opened, 10)
        except TimeoutError:
            ok = False
        if not ok:
            if client.transport is not None:
                client.transport.abort()
            return None
        self.totals.opened += 1
        if random.random() < 0.2:
            group = f"g{random.randrange(self.groups)}"
            payload = b'{"type":"sendToGroup","group":"%s","dataType":"text","data":"hi"}' % (
                group.encode()
            )
            client.send(payload)
            self.totals.client_publishes += 1
        return client

    async def open_many(self, count: int, deadline: float) -> None:
        batch = 200
        while len(self.clients) < count and time.monotonic() < deadline:
            wanted = min(batch, count - len(self.clients))
            opened = await asyncio.gather(*(self.open_one() for _ in range(wanted)))
            self.clients.extend(c for c in opened if c is not None)

    async def replace(self, count: int) -> None:
        picks = random.sample(range(len(self.clients)), min(count, len(self.clients)))
        leaving = [self.clients[i] for i in picks]
        ways = random.choices(["clean", "abrupt", "mid_frame"], weights=[6, 3, 1], k=len(picks))
        for way in ways:
            field = {"clean": "closed_clean", "abrupt": "closed_abrupt"}.get(
                way, "closed_mid_frame"
            )
            setattr(self.totals, field, getattr(self.totals, field) + 1)
        await asyncio.gather(*(c.leave(w) for c, w in zip(leaving, ways, strict=True)))
        fresh = await asyncio.gather(*(self.open_one() for _ in picks))
        for index, client in zip(picks, fresh, strict=True):
            if client is not None:
                self.clients[index] = client
        self.clients = [c for c in self.clients if not c.leaving]

    async def close_all(self) -> None:
        clients, self.clients = self.clients, []
        for start in range(0, len(clients), 500):
            await asyncio.gather(*(c.leave("clean") for c in clients[start : start + 500]))


async def http_json(port: int, method: str, path: str, body: bytes = b"", **headers: str) -> Any:
    """One HTTP/1.1 request on its own connection (stdlib only); returns the parsed JSON."""
    reader, writer = await asyncio.open_connection(HOST, port)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", "Connection: close"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    raw = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, (json.loads(payload) if payload.strip() else None)


async def stats(port: int) -> dict[str, int]:
    _, body = await http_json(port, "GET", STATS)
    return dict(body)


async def publisher(
    port: int, groups: int, rate: float, totals: Totals, stop: asyncio.Event
) -> None:
    """REST sends to random groups at ``rate`` per second (and one broadcast a second),
    over one kept-alive connection."""
    endpoint = f"http://{HOST}:{port}"
    token = mint_rest_token(KEY, endpoint)  # aud = the bare endpoint
    reader, writer = await asyncio.open_connection(HOST, port)
    interval = 1.0 / rate
    sent = 0
    started = time.monotonic()
    try:
        while not stop.is_set():
            sent += 1
            to = "" if sent % max(int(rate), 1) == 0 else f"groups/g{random.randrange(groups)}/"
            body = b"soak message %d" % sent
            writer.write(
                (
                    f"POST /api/hubs/{HUB}/{to}:send HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                    f"Authorization: Bearer {token}\r\nContent-Type: text/plain\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n"
                ).encode()
                + body
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if length:
                await reader.readexactly(length)
            if b" 202 " in head.split(b"\r\n", 1)[0]:
                totals.rest_publishes += 1
            else:
                totals.rest_errors += 1
            delay = started + sent * interval - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
    finally:
        writer.close()


@dataclass
class Config:
    connections: int
    duration: float
    churn: int
    rate: float
    timeout: float
    sample: float
    cycles: int


async def run(config: Config) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--connections", str(config.connections)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 30)
        port = int(line)
        totals = Totals()
        groups = max(1, config.connections // 100)
        load = Load(port, groups, totals)
        report: dict[str, Any] = {"config": asdict(config)}
        deadline = time.monotonic() + config.timeout

        # Warm up: one full open/close cycle, so one-time allocations (caches, pools, the
        # allocator's arenas) are not counted as leaks.
        await load.open_many(config.connections, deadline)
        await load.close_all()
        await settle(port, deadline)
        report["idle_before"] = await stats(port)

        # Each cycle: everyone connects, churn with messages flowing, everyone leaves. A
        # leak grows from cycle to cycle; what the allocator keeps for reuse does not.
        report["cycles"] = []
        for _ in range(config.cycles):
            cycle: dict[str, Any] = {}
            started = time.monotonic()
            await load.open_many(config.connections, deadline)
            cycle["open_seconds"] = round(time.monotonic() - started, 2)
            cycle["full_start"] = await stats(port)
            cycle["samples"], cycle["churn_seconds"] = await churn(load, port, config, deadline)
            await load.open_many(config.connections, deadline)  # top up what was refused
            cycle["full_end"] = await stats(port)
            await load.close_all()
            await settle(port, deadline)
            cycle["idle"] = await stats(port)
            report["cycles"].append(cycle)
        report["idle_after"] = report["cycles"][-1]["idle"]
        report["totals"] = asdict(totals)
        return report
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(child.wait), 10)
            except TimeoutError:
                child.kill()


async def churn(
    load: Load, port: int, config: Config, deadline: float
) -> tuple[list[dict[str, int]], float]:
    """Replace ``config.churn`` clients a second for ``config.duration`` seconds while REST
    publishes; returns the service's stats sampled every ``config.sample`` seconds."""
    stop = asyncio.Event()
    publishing = asyncio.create_task(publisher(port, load.groups, config.rate, load.totals, stop))
    started = time.monotonic()
    end = min(started + config.duration, deadline)
    next_sample = started + config.sample
    samples = []
    while time.monotonic() < end:
        tick = time.monotonic()
        await load.replace(config.churn)
        if tick >= next_sample:
            samples.append({"t": round(tick - started), **await stats(port)})
            next_sample += config.sample
        rest = 1.0 - (time.monotonic() - tick)
        if rest > 0:
            await asyncio.sleep(rest)  # pace the churn at ``churn`` per second
    stop.set()
    await publishing
    return samples, round(time.monotonic() - started, 1)


async def settle(port: int, deadline: float) -> None:
    """Wait until the service holds no client connection (closing is asynchronous)."""
    while time.monotonic() < deadline:
        current = await stats(port)
        if current["connections"] == 0 and current["protocols"] <= 1:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the service never let go of its connections")


def verdict(report: dict[str, Any]) -> list[str]:
    """The leaks the numbers show (empty: none)."""
    problems = []
    before = report["idle_before"]
    cycles = report["cycles"]
    for number, cycle in enumerate(cycles, 1):
        idle = cycle["idle"]
        for key in ("tasks", "fds", "connections", "groups", "users", "recovering"):
            if idle[key] != before[key]:
                problems.append(f"cycle {number}: {key} {before[key]} before, {idle[key]} after")
        if idle["objects"] - before["objects"] > max(2000, before["objects"] // 50):
            problems.append(
                f"cycle {number}: objects {before['objects']} before, {idle['objects']} after"
            )
        start, end = cycle["full_start"], cycle["full_end"]
        if end["objects"] - start["objects"] > max(2000, start["objects"] // 50):
            problems.append(
                f"cycle {number}: objects at full load {start['objects']} -> {end['objects']}"
            )
    # Memory in use (C heap trimmed), at rest after each cycle: the first cycle may raise
    # the allocator's high-water mark; later ones must not keep raising it.
    if len(cycles) >= 2:
        first, last = cycles[0]["idle"]["rss_trimmed_kb"], cycles[-1]["idle"]["rss_trimmed_kb"]
        if last > first * 1.05 + 4096:
            problems.append(f"rss at rest: {first} kB after cycle 1, {last} kB after the last")
    if report["totals"]["unexpected_closes"]:
        problems.append(f"{report['totals']['unexpected_closes']} unexpected closes")
    return problems


KEYS = ("rss_kb", "rss_trimmed_kb", "objects", "tasks", "fds", "protocols", "connections")


def print_report(report: dict[str, Any]) -> None:
    config = report["config"]
    print(
        f"soak: {config['connections']} connections; {config['cycles']} cycles of "
        f"{config['duration']:.0f} s churn at {config['churn']}/s; REST {config['rate']:.0f} msg/s"
    )
    print(f"{'':16}" + "".join(f"{k:>15}" for k in KEYS))

    def row(label: str, values: dict[str, int]) -> None:
        print(f"{label:16}" + "".join(f"{values[k]:>15}" for k in KEYS))

    row("idle (warm)", report["idle_before"])
    for number, cycle in enumerate(report["cycles"], 1):
        row(f"{number}: all open", cycle["full_start"])
        for sample in cycle["samples"]:
            row(f"{number}:   t={sample['t']} s", sample)
        row(f"{number}: end churn", cycle["full_end"])
        row(f"{number}: all gone", cycle["idle"])
    totals = report["totals"]
    print("totals: " + ", ".join(f"{k}={v}" for k, v in totals.items()))
    gone = totals["closed_clean"] + totals["closed_abrupt"] + totals["closed_mid_frame"]
    seconds = sum(cycle["churn_seconds"] for cycle in report["cycles"])
    opening = report["cycles"][0]["open_seconds"]
    print(
        f"opened {config['connections']} clients in {opening} s; replaced {gone} "
        f"in {seconds:.0f} s of churn ({gone / seconds:.0f}/s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of churn")
    parser.add_argument("--churn", type=int, default=1000, help="clients replaced per second")
    parser.add_argument("--rate", type=float, default=200.0, help="REST publishes per second")
    parser.add_argument("--timeout", type=float, default=600.0, help="bound on the whole run")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--cycles", type=int, default=3, help="connect-churn-leave cycles")
    parser.add_argument("--short", action="store_true", help="the CI size: 300 clients, 5 s")
    parser.add_argument("--check", action="store_true", help="exit 1 when a leak shows")
    parser.add_argument("--json", help="also write the report to this file")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    limit = raise_fd_limit()
    if args.serve:
        try:
            import uvloop

            uvloop.run(serve(args.connections))
        except ImportError:  # pragma: no cover
            asyncio.run(serve(args.connections))
        return 0
    if args.short:
        args.connections, args.duration, args.churn, args.rate = 300, 3.0, 100, 100.0
        args.sample, args.cycles = 1.0, 2
        args.timeout = min(args.timeout, 60.0)
    if args.connections + 200 > limit:
        print(f"soak: {args.connections} connections need more than {limit} open files")
        return 2
    config = Config(
        args.connections,
        args.duration,
        args.churn,
        args.rate,
        args.timeout,
        args.sample,
        args.cycles,
    )
    try:
        import uvloop

        report = uvloop.run(asyncio.wait_for(run(config), args.timeout + 30))
    except ImportError:  # pragma: no cover
        report = asyncio.run(asyncio.wait_for(run(config), args.timeout + 30))
    print_report(report)
    problems = verdict(report)
    report["problems"] = problems
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    for problem in problems:
        print(f"LEAK? {problem}")
    if not problems:
        print("no leak: tasks, descriptors, connections and groups back to the start")
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    sys.exit(main())
