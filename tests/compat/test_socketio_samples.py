"""samples/socketio: Azure's Socket.IO quickstart (app server and client) against the service,
with the official packages of tests/node (issue 18 item 5)."""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from pathlib import Path

import pytest

from tests.nodejs import NODE_DIR, node_missing
from webpubsub.testing import ServiceThread

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "socketio"
TIMEOUT = 20.0

pytestmark = pytest.mark.skipif(node_missing() is not None, reason=str(node_missing()))


def lines_of(process: subprocess.Popen[str]) -> queue.Queue[str]:
    """The process's output lines, read by a thread (so every wait can be bounded)."""
    found: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            found.put(line.strip())

    threading.Thread(target=read, daemon=True).start()
    return found


def test_quickstart_runs_unchanged(service: ServiceThread) -> None:
    env = {**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules"), "PORT": "0"}
    app = subprocess.Popen(
        ["node", str(SAMPLE / "server.js"), service.connection_string],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        printed = lines_of(app)
        assert printed.get(timeout=TIMEOUT) == "app server ready"
        client = subprocess.run(
            ["node", str(SAMPLE / "client.js"), service.endpoint],
            capture_output=True,
            text=True,
            env=env,
            timeout=TIMEOUT,
        )
        assert client.stdout.splitlines() == ["world", "chat: hi from the quickstart"], (
            client.stdout + client.stderr
        )
        assert printed.get(timeout=TIMEOUT) == "stranger"
    finally:
        app.kill()
        app.wait(TIMEOUT)
