"""``webpubsub serve --workers 2 --redis``: two real worker processes on one port.

Clients land on both workers; REST sends reach them all; ``/metrics`` and Live Trace show
both workers from whichever one answers; a worker killed with SIGKILL is restarted and its
connections leave membership; SIGTERM drains every worker. Without Redis, more than one
worker is refused.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster.conftest import RedisServer, running_redis
from tests.cluster.reliable import Reliable
from tests.conftest import ACCESS_KEY
from tests.hardening.process import ServiceProcess
from tests.server.helpers import TIMEOUT, JsonClient, open_json_url
from webpubsub.auth.tokens import mint_client_token, mint_rest_token

HUB = "workers"
CLIENTS = 16
CONFIG = "[cluster]\nnode_ttl = 2.0\nheartbeat_interval = 0.5\nredis_timeout = 1.0\n"


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(CONFIG)
    return path


def start_workers(redis: RedisServer, config: Path) -> ServiceProcess:
    return ServiceProcess(
        "--access-key",
        ACCESS_KEY,
        "--redis",
        redis.url,
        "--workers",
        "2",
        "--config",
        str(config),
        "--log-level",
        "warning",
    ).start()


def workers_of(process: ServiceProcess) -> set[int]:
    """The pids of the supervisor's children (its workers)."""
    assert process.proc is not None
    pid = process.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return {int(child) for child in children}


async def connect(process: ServiceProcess, user: str) -> JsonClient:
    audience = f"{process.endpoint}/client/hubs/{HUB}"
    token = mint_client_token(ACCESS_KEY, audience, user_id=user)
    return await open_json_url("ws" + audience[len("http") :] + f"?access_token={token}")


async def rest(process: ServiceProcess, method: str, path: str, body: bytes = b"") -> int:
    url = f"{process.endpoint}/api/hubs/{HUB}{path}"
    headers = {
        "Authorization": f"Bearer {mint_rest_token(ACCESS_KEY, url)}",
        "Content-Type": "text/plain",
    }
    # A client per call: a new TCP connection, which may land on either worker.
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        response = await http.request(
            method, url, params={"api-version": "2024-12-01"}, content=body, headers=headers
        )
    return response.status_code


async def exists(process: ServiceProcess, client: JsonClient) -> bool:
    status = await rest(process, "HEAD", f"/connections/{client.connection_id}")
    assert status in (200, 404), status
    return status == 200


async def metrics(process: ServiceProcess) -> dict[str, float]:
    """``name{labels}`` -> value from one scrape (on whichever worker takes it)."""
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        text = (await http.get(f"{process.endpoint}/metrics")).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def per_worker(samples: dict[str, float]) -> dict[str, float]:
    found = {}
    for name, value in samples.items():
        if match := re.fullmatch(r'webpubsub_worker_connections\{worker="(\d+)"\}', name):
            found[match.group(1)] = value
    return found


async def alive(client: JsonClient) -> bool:
    """Whether the client's worker still answers it (a ping gets a pong)."""
    try:
        await client.send({"type": "ping"})
        return (await client.receive(timeout=TIMEOUT)) == {"type": "pong"}
    except Exception:  # the socket died with its worker
        return False


async def everyone_gets(process: ServiceProcess, clients: list[JsonClient], text: str) -> None:
    assert await rest(process, "POST", "/:send", text.encode()) == 202
    for client in clients:
        message = await client.receive()
        assert (message["type"], message["data"]) == ("message", text), message


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(0.05)


def shutdown(process: ServiceProcess) -> None:
    """Stop the supervisor as an operator would (SIGTERM drains), killing it as a last resort."""
    if process.proc is not None and process.proc.poll() is None:
        process.signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            for pid in workers_of(process):
                os.kill(pid, signal.SIGKILL)
    process.stop()


async def close(clients: list[JsonClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def test_more_workers_than_one_need_redis() -> None:
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src}
    env.pop("WEBPUBSUB_REDIS_URL", None)
    for extra, environ in (
        (["--workers", "2"], {}),
        ([], {"WEBPUBSUB_WORKERS": "2"}),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "webpubsub", "serve", "--port", "0", *extra],
            env={**env, **environ},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2, result.stderr
        assert "needs --redis" in result.stderr
        assert "clients connected to one could not reach the others" in result.stderr


async def test_clients_on_both_workers_metrics_and_rest(redis: RedisServer, config: Path) -> None:
    process = start_workers(redis, config)
    clients: list[JsonClient] = []
    try:
        assert len(workers_of(process)) == 2
        clients = [await connect(process, f"user{i}") for i in range(CLIENTS)]
        # Any scrape (either worker) counts the connections of both, and both have some.
        for _ in range(4):
            samples = await metrics(process)
            counts = per_worker(samples)
            assert set(counts) == {"0", "1"}, counts
            assert all(count > 0 for count in counts.values()), counts
            assert sum(counts.values()) == CLIENTS
            total = sum(v for k, v in samples.items() if k.startswith("webpubsub_connections{"))
            assert total == CLIENTS
            nodes = [k for k in samples if k.startswith("webpubsub_cluster_node_info{")]
            assert len(nodes) == 2
        # REST through either worker reaches the clients of both.
        for i in range(3):
            await everyone_gets(process, clients, f"hello {i}")
        for client in clients:
            assert await exists(process, client)
    finally:
        await close(clients)
        shutdown(process)


async def sse(response: httpx.Response) -> AsyncIterator[tuple[str, object]]:
    event = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            yield event, json.loads(line[len("data: ") :])


async def test_live_trace_shows_the_other_worker(redis: RedisServer, config: Path) -> None:
    process = start_workers(redis, config)
    try:
        url = f"{process.endpoint}/livetrace"
        token = mint_rest_token(ACCESS_KEY, url)
        stop = asyncio.Event()

        async def traffic() -> None:
            while not stop.is_set():
                await rest(process, "HEAD", "/connections/nobody")
                await asyncio.sleep(0.05)

        async with (
            httpx.AsyncClient(timeout=TIMEOUT) as http,
            http.stream("GET", f"{url}/stream", params={"access_token": token}) as response,
        ):
            assert response.status_code == 200
            events = sse(response)
            event, hello = await anext(events)
            assert event == "hello" and isinstance(hello, dict)
            mine = hello["worker"]
            load = asyncio.create_task(traffic())
            seen: set[int] = set()
            try:
                async with asyncio.timeout(15):
                    async for event, data in events:
                        if event == "records" and isinstance(data, list):
                            seen |= {
                                r["worker"] for r in data if r.get("category") == "HttpRequestLogs"
                            }
                        if seen - {mine}:
                            break
            finally:
                stop.set()
                await load
        assert seen - {mine} == {1 - mine}, (mine, seen)
    finally:
        shutdown(process)


async def stream_hello(process: ServiceProcess, cookie: str) -> tuple[int, object]:
    """Open the Live Trace stream with a session cookie on a new connection: (status, hello)."""
    async with (
        httpx.AsyncClient(timeout=TIMEOUT, headers={"Cookie": cookie}) as http,
        http.stream("GET", f"{process.endpoint}/livetrace/stream") as response,
    ):
        if response.status_code != 200:
            return response.status_code, None
        event, hello = await anext(sse(response))
        assert event == "hello"
        return 200, hello


async def test_live_trace_session_works_on_every_worker(redis: RedisServer, config: Path) -> None:
    """Signed in through one worker, a browser's next connections may reach any worker."""
    process = start_workers(redis, config)
    try:
        url = f"{process.endpoint}/livetrace"
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            login = await http.get(url, params={"access_token": mint_rest_token(ACCESS_KEY, url)})
        assert login.status_code == 303
        cookie = login.headers["set-cookie"].split(";", 1)[0]
        workers: set[int] = set()
        for _ in range(30):
            status, hello = await stream_hello(process, cookie)
            assert status == 200 and isinstance(hello, dict)
            workers.add(hello["worker"])
            if len(workers) == 2:
                break
        assert workers == {0, 1}
        async with httpx.AsyncClient(timeout=TIMEOUT, headers={"Cookie": cookie}) as http:
            assert (await http.post(f"{url}/logout")).status_code == 303
        for _ in range(6):  # signed out on every worker
            status, _ = await stream_hello(process, cookie)
            assert status == 401
    finally:
        shutdown(process)


async def test_killed_worker_is_restarted(redis: RedisServer, config: Path) -> None:
    process = start_workers(redis, config)
    clients: list[JsonClient] = []
    try:
        clients = [await connect(process, f"user{i}") for i in range(CLIENTS)]
        before = workers_of(process)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)

        async def restarted() -> bool:
            return len(workers_of(process) - before) == 1

        await until(restarted, "the worker to be restarted")
        states = await asyncio.gather(*(alive(c) for c in clients))
        survivors = [c for c, up in zip(clients, states, strict=True) if up]
        dead = [c for c, up in zip(clients, states, strict=True) if not up]
        assert survivors and dead, "the clients were not spread over both workers"

        # The dead worker's connections leave membership (its node expires); others stay.
        async def gone() -> bool:
            return not any([await exists(process, c) for c in dead])

        await until(gone, "the killed worker's connections to leave membership")
        for client in survivors:
            assert await exists(process, client)

        # The restarted worker serves: new clients land on both workers and get sends.
        fresh = [await connect(process, f"new{i}") for i in range(CLIENTS)]
        clients = survivors + fresh
        await until(lambda: _both_busy(process), "new clients on both workers")
        await everyone_gets(process, clients, "after the restart")
    finally:
        await close(clients)
        shutdown(process)


async def _both_busy(process: ServiceProcess) -> bool:
    counts = per_worker(await metrics(process))
    return len(counts) == 2 and all(v > 0 for v in counts.values())


async def test_sigterm_drains_every_worker(redis: RedisServer, config: Path) -> None:
    process = start_workers(redis, config)
    clients = [await connect(process, f"user{i}") for i in range(CLIENTS)]
    try:
        pids = workers_of(process)
        assert await _both_busy(process)
        started = time.monotonic()
        process.signal(signal.SIGTERM)
        closes = await asyncio.gather(*(c.until_closed(timeout=10) for c in clients))
        assert {code for code, _, _ in closes} == {1001}
        status = await asyncio.to_thread(process.wait, 10)
        assert status == 0, process.stderr_text[-2000:]
        assert time.monotonic() - started < 5, "the drain took longer than shutdown_grace"
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
    finally:
        await close(clients)
        shutdown(process)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


async def test_reliable_clients_recover_on_whichever_worker(
    redis: RedisServer, config: Path
) -> None:
    """A reconnect lands on whichever worker the kernel picks; the connection follows it,
    with every message sent meanwhile, until it has been held by both workers."""
    process = start_workers(redis, config)
    client = Reliable(HUB, "rel", key=ACCESS_KEY)
    try:
        await client.connect(process)
        first = client.connection_id
        holders: set[str] = set()
        for n in range(40):
            holders |= {w for w, count in per_worker(await metrics(process)).items() if count}
            if len(holders) == 2 and n >= 4:
                break
            client.drop()
            assert await rest(process, "POST", "/users/rel/:send", str(n).encode()) == 202
            connected = await client.recover(process)
            assert connected["connectionId"] == first
            await client.read(1)
        assert holders == {"0", "1"}, "every recovery landed on the same worker"
        assert client.data == [str(n) for n in range(len(client.data))]
    finally:
        if client.ws is not None:
            await client.ws.close()
        shutdown(process)
