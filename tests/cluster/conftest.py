"""A real Redis server and three service nodes as separate processes, for cluster tests.

``.ci/run`` installs Debian's ``redis-server``; elsewhere the tests skip when it is missing
(in CI they fail instead, so a missing install step cannot hide).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ACCESS_KEY = "cluster-access-key-0123456789abcdefghijkl"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class RedisServer:
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@dataclass
class Node:
    """One ``webpubsub serve --redis`` process on a fixed port (one worker: a kill -9 kills
    the whole node). With ``log_path`` its output is kept there at info level."""

    port: int
    config: Path
    redis_url: str
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connection_string(self) -> str:
        return f"Endpoint={self.endpoint};AccessKey={ACCESS_KEY};Version=1.0;"

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
        env.pop("WEBPUBSUB_CONFIG", None)
        command = [sys.executable, "-m", "webpubsub", "serve", "--port", str(self.port)]
        command += ["--access-key", ACCESS_KEY, "--redis", self.redis_url, "--workers", "1"]
        command += ["--config", str(self.config)]
        command += ["--log-level", "warning" if self.log_path is None else "info"]
        with contextlib.ExitStack() as stack:
            out: Any = subprocess.DEVNULL
            if self.log_path is not None:
                out = stack.enter_context(self.log_path.open("ab"))
            self.process = subprocess.Popen(command, stdout=out, stderr=out, env=env)
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
            self.process.send_signal(signal.SIGCONT)  # a node a test stopped must hear TERM
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None

    def log(self) -> str:
        assert self.log_path is not None, "started without a log file"
        return self.log_path.read_text(errors="replace")


def require_redis_server() -> None:
    """Skip without ``redis-server`` (in CI, fail: a missing install step must not hide)."""
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (.ci/run must install it)")
        pytest.skip("redis-server is not installed")


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A throwaway redis-server on a free port, for one module's tests."""
    require_redis_server()
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(free_port(), Path(tmp))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@dataclass
class Cluster:
    redis: RedisServer
    nodes: list[Node]


# Short timings, so that a test of failures does not wait long for the nodes to notice.
FAST = "[cluster]\nnode_ttl = 2.0\nheartbeat_interval = 0.5\nredis_timeout = 1.0\n"


@contextmanager
def running_cluster(config: str = FAST, nodes: int = 3, *, logs: bool = False) -> Iterator[Cluster]:
    """A throwaway Redis and ``nodes`` started nodes sharing the TOML ``config``
    (with ``logs``, each node's output kept at info level, for ``Node.log``)."""
    require_redis_server()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        path = workdir / "node.toml"
        path.write_text(config)
        redis = RedisServer(free_port(), workdir)
        redis.start()
        members = [
            Node(free_port(), path, redis.url, workdir / f"node{i}.log" if logs else None)
            for i in range(nodes)
        ]
        try:
            for node in members:
                node.start()
            yield Cluster(redis, members)
        finally:
            for node in members:
                node.stop()
            if redis.process is not None:
                redis.process.send_signal(signal.SIGCONT)  # a test may have stopped it
            redis.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster() as running:
        yield running
