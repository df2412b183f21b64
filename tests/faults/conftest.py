"""Fault injection: a real redis-server and three ``webpubsub serve`` processes.

The tests kill, stop and restart Redis and nodes while a REST load runs, and count every
message that REST accepted (202) at the clients of every node. Each node writes its log to a
file, so a test can also check what an operator would read.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cluster.conftest import RedisServer, free_port, wait_for_port

ACCESS_KEY = "faults-access-key-0123456789abcdefghijklmnop"
NODE_TTL = 2.0
CONFIG = f"""
[cluster]
node_ttl = {NODE_TTL}
heartbeat_interval = 0.5
redis_timeout = 1.0
publish_timeout = 3.0
"""


@dataclass
class NodeProcess:
    """One ``webpubsub serve --redis`` process on a fixed port, its log in a file."""

    port: int
    config: Path
    redis_url: str
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    logs: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        src = str(Path(__file__).resolve().parents[2] / "src")
        env = {**os.environ, "PYTHONPATH": src}
        env.pop("WEBPUBSUB_CONFIG", None)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "webpubsub",
                    "serve",
                    "--port",
                    str(self.port),
                    "--access-key",
                    ACCESS_KEY,
                    "--redis",
                    self.redis_url,
                    "--workers",
                    "1",  # one process per node: a kill -9 kills the whole node
                    "--config",
                    str(self.config),
                    "--log-level",
                    "info",
                ],
                stdout=log,
                stderr=log,
                env=env,
            )
        wait_for_port(self.port)

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Cluster:
    redis: RedisServer
    nodes: list[NodeProcess]

    def restart_redis(self) -> None:
        """A fresh, empty Redis on the same port (as after a crash without persistence)."""
        self.redis.start()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (.ci/run must install it)")
        pytest.skip("redis-server is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        config = workdir / "node.toml"
        config.write_text(CONFIG)
        redis = RedisServer(free_port(), workdir)
        redis.start()
        nodes = [
            NodeProcess(free_port(), config, redis.url, workdir / f"node{i}.log") for i in range(3)
        ]
        try:
            for node in nodes:
                node.start()
            yield Cluster(redis, nodes)
        finally:
            for node in nodes:
                node.stop()
            if redis.process is not None:
                redis.process.send_signal(signal.SIGCONT)
            redis.stop()
