"""Redis that fails over: a master, a replica and three sentinels, the master lost mid-load.

Three nodes follow the master through a ``redis+sentinel://`` URL. A steady REST load runs
through every node while the master is killed (``kill -9``), hangs (``SIGSTOP``, kept
stopped) or is demoted (``SENTINEL FAILOVER``); the sentinels promote the replica, the nodes
find it, re-register and re-subscribe. REST answers 503 for the failover window only, and
every message it answered 202 reaches every client (one of them reliable) exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from bench.redis_probe import ask, reply_field, sentinel_command

from tests.cluster.conftest import ACCESS_KEY, Node, free_port, wait_for_port

from .conftest import CONFIG
from .load import Load, receiver
from .test_faults import check_delivery, close

HUB = "failover"
SERVICE = "wpsmaster"
DOWN_AFTER_MS = 1000


def wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Deployment:
    master: subprocess.Popen[bytes]
    master_port: int
    replica_port: int
    sentinel_ports: list[int]
    processes: list[subprocess.Popen[bytes]]
    nodes: list[Node]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def master_seen_by_sentinels(self) -> set[str]:
        ports = set()
        for port in self.sentinel_ports:
            reply = ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            ports.add(reply[-2] if len(reply) >= 2 else "")
        return ports


def _redis(port: int, workdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    return process


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    command = sentinel_command()
    if command is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server/redis-sentinel is not installed (.ci/run must install it)")
        pytest.skip("redis-server is not installed")
    processes: list[subprocess.Popen[bytes]] = []
    nodes: list[Node] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        try:
            master_port, replica_port = free_port(), free_port()
            (workdir / "master").mkdir()
            (workdir / "replica").mkdir()
            master = _redis(master_port, workdir / "master")
            processes.append(master)
            processes.append(
                _redis(
                    replica_port, workdir / "replica", "--replicaof", "127.0.0.1", str(master_port)
                )
            )
            wait_until(
                lambda: (
                    reply_field(ask(replica_port, "INFO", "replication"), "master_link_status")
                    == "up"
                ),
                "the replica to sync",
            )
            sentinel_ports = [free_port() for _ in range(3)]
            for port in sentinel_ports:
                conf = workdir / f"sentinel-{port}.conf"
                conf.write_text(
                    f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {workdir}\n"
                    f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
                    f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                    f"sentinel failover-timeout {SERVICE} 3000\n"
                    f"sentinel parallel-syncs {SERVICE} 1\n"
                )
                processes.append(
                    subprocess.Popen(
                        [*command, str(conf)],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
                wait_for_port(port)
            for port in sentinel_ports:
                # Each sentinel knows the replica and the two other sentinels: ready to vote.
                wait_until(
                    lambda port=port: (
                        reply_field(ask(port, "SENTINEL", "MASTER", SERVICE), "num-other-sentinels")
                        == "2"
                        and reply_field(ask(port, "SENTINEL", "MASTER", SERVICE), "num-slaves")
                        == "1"
                    ),
                    f"sentinel {port} to see its peers and the replica",
                )
            config = workdir / "node.toml"
            config.write_text(CONFIG)
            found = Deployment(master, master_port, replica_port, sentinel_ports, processes, [])
            for i in range(3):
                node = Node(free_port(), config, found.url, workdir / f"node{i}.log")
                nodes.append(node)
                node.start()
            found.nodes = nodes
            yield found
        finally:
            for node in nodes:
                node.stop()
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signal.SIGCONT)
                    process.kill()
                    process.wait(timeout=10)


FAULTS = {"kill": "master kill -9", "hang": "master SIGSTOP", "demote": "SENTINEL FAILOVER"}


@pytest.mark.parametrize("fault", list(FAULTS))
async def test_sentinel_failover_under_rest_load(deployment: Deployment, fault: str) -> None:
    """``kill``: the master dies (connections break at once). ``hang``: it stops answering
    and stays stopped (like a partition): nothing breaks, calls time out, and subscribers
    still connected to it would hear nothing until moved to the new master. ``demote``: a
    manual failover; the former master lives on as a replica (writes to it: READONLY)."""
    nodes = deployment.nodes
    receivers = [await receiver(node, HUB, f"user{i}") for i, node in enumerate(nodes)]
    receivers.append(
        await receiver(nodes[1], HUB, "reliable", protocol="json.reliable.webpubsub.azure.v1")
    )
    load = Load(HUB, nodes)
    load.start()
    await load.accepted_since(0, 30)
    if fault == "kill":
        deployment.master.send_signal(signal.SIGKILL)
        deployment.master.wait(timeout=10)
    elif fault == "hang":
        deployment.master.send_signal(signal.SIGSTOP)
    else:
        reply = ask(deployment.sentinel_ports[0], "SENTINEL", "FAILOVER", SERVICE)
        assert reply[0] == "+OK", reply
    failed = time.monotonic()
    replica = {str(deployment.replica_port)}
    # The sentinels notice after down-after-milliseconds, elect a leader and promote the
    # replica; the nodes find it and answer 202 again.
    deadline = failed + 20
    while await asyncio.to_thread(deployment.master_seen_by_sentinels) != replica:
        assert time.monotonic() < deadline, "the sentinels did not promote the replica"
        await asyncio.sleep(0.1)
    if fault == "demote":
        await load.accepted_since(time.monotonic() + 3.0, 60, timeout=30)
    else:
        await load.recovered(failed, 60, timeout=30)
    await load.stop()
    try:
        await check_delivery(load, receivers)
    except AssertionError:
        for client in receivers:
            missing = await client.has(load.accepted)
            taken = Counter(load.via[i] for i in missing)
            print(f"client on {client.node.endpoint} misses {len(missing)}, taken by {taken}")
        for i, node in enumerate(nodes):  # what an operator would read, to find out why
            noise = ("DIAG wrote", "DIAG ask ok", "webpubsub.connections", "webpubsub.access")
            lines = [x for x in node.log().splitlines() if not any(n in x for n in noise)]
            print(f"--- node {i} ({node.endpoint}) log ---\n" + "\n".join(lines[-400:]))
        raise
    refusals = [t - failed for t in load.refused_at if t > failed]
    assert refusals or fault == "demote", "no 503 at all: did the master really fail?"
    last = max(refusals, default=0.0)
    back = min(t - failed for t in load.accepted_at if t - failed > last)
    print(
        f"\n[fault] Sentinel failover ({FAULTS[fault]}, down-after {DOWN_AFTER_MS} ms): "
        f"accepted {len(load.accepted)}, refused {dict(load.refused)}, unanswered "
        f"{load.unknown}, lost 0, 503 from {min(refusals, default=0.0):.2f} s to {last:.2f} s "
        f"after the fault, REST accepting again {back:.2f} s after it"
    )
    assert set(load.refused) <= {503}, f"unexpected refusals: {dict(load.refused)}"
    # 503 at most for the failover window: detection, election, promotion, re-subscription.
    assert back < 20
    for node in nodes:
        assert "failed over" in node.log(), f"a node missed the failover:\n{node.log()}"
    await close(receivers)


def serve(url: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src}
    env.pop("WEBPUBSUB_CONFIG", None)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "webpubsub",
            "serve",
            "--port",
            str(free_port()),
            "--access-key",
            ACCESS_KEY,
            "--redis",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_unreachable_sentinels_stop_the_node_with_a_message() -> None:
    dead = ",".join(f"127.0.0.1:{free_port()}" for _ in range(2))
    result = serve(f"redis+sentinel://{dead}/{SERVICE}/0?sentinel_password=hush")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "unreachable" in result.stderr and SERVICE in result.stderr
    assert "hush" not in result.stderr  # the sentinel password stays out of the message


def test_a_service_the_sentinels_do_not_know_stops_the_node_with_a_message() -> None:
    command = sentinel_command()
    if command is None:
        pytest.skip("redis-server is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        conf = Path(tmp) / "sentinel.conf"
        conf.write_text(f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {tmp}\n")
        sentinel = subprocess.Popen(
            [*command, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_port(port)
            result = serve(f"redis+sentinel://127.0.0.1:{port}/nosuchmaster")
        finally:
            sentinel.kill()
            sentinel.wait(timeout=10)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "names a master for 'nosuchmaster'" in result.stderr


def test_a_bad_sentinel_url_is_a_configuration_error() -> None:
    result = serve("redis+sentinel://127.0.0.1:26379")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "bad Redis Sentinel URL" in result.stderr and "service" in result.stderr
