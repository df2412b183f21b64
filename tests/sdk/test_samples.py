"""Every script in ``samples/`` runs, as is, against ``webpubsub serve``.

One service process is started for the module (the real CLI, on a port picked here); the
samples run in parallel as subprocesses with only the environment variables they document.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
WEBPUBSUB = Path(sys.executable).parent / "webpubsub"
KEY = "samples-access-key-0123456789abcdefghijkl"

# What each sample must print (one marker per seed code block it mirrors).
EXPECTED = {
    "authenticate_connection_string.py": ["Client for hub 'sample_hub'", "user1 connected: False"],
    "authenticate_key_credential.py": ["after credential.update()"],
    "authenticate_entra_id.py": [
        "scopes ('https://webpubsub.azure.com/.default',)",
        "entra-user received json: {'message': 'Hello from an Entra ID client!'}",
    ],
    "get_client_access_token.py": [
        "/client/hubs/sample_get_client_access_token?access_token=...",
        "Connected as user1",
    ],
    "broadcast.py": [
        "received json: {'message': 'Hello world!'}",
        "received text: 'Hi there!'",
        "received binary: '10 bytes'",
    ],
    "send_to_group.py": [
        "user1 received json: {'message': 'Hello world!'}",
        "user1 received text: 'Hi there!'",
        "user1 received binary: '10 bytes'",
        "Connections in sample-group: 1",
    ],
    "send_to_user.py": ["user1 received binary: '10 bytes'"],
    "group_has_connections.py": [
        "Group has connections: True",
        "Client was told: <closeReason>",
        "Group has connections after closing: False",
    ],
    "raw_response.py": ["-> 202 Accepted", "-> 404 Not Found", "x-ms-error-code"],
    "enable_logs.py": [],  # checked on stderr below
    "async_broadcast.py": ["async-group member: user1", "async-group exists: True"],
    "mqtt_paho.py": [
        "connected: Success",
        "received on sample-topic: b'Hello from MQTT!'",
        "received on sample-topic: b'Hello from REST!'",
    ],
}


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    """``webpubsub serve`` on a free port; yields its connection string."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBPUBSUB_")}
    process = subprocess.Popen(
        [str(WEBPUBSUB), "serve", "--port", str(port), "--access-key", KEY],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 15
        connection_string = None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if line.startswith("Connection string:"):
                # The printed key is masked (we passed it): fill ours in, as a user would.
                printed = line.split(":", 1)[1].strip()
                connection_string = printed.replace("AccessKey=***;", f"AccessKey={KEY};")
                break
        assert connection_string, "webpubsub serve printed no connection string"
        assert KEY in connection_string, connection_string
        yield connection_string
    finally:
        process.terminate()
        process.wait(timeout=15)


def _env(connection_string: str, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("WEBPUBSUB_", "AZURE_LOG_LEVEL"))
    }
    env.update(WEBPUBSUB_CONNECTION_STRING=connection_string, **extra)
    return env


def test_every_sample_is_listed() -> None:
    scripts = {p.name for p in SAMPLES.glob("*.py")}
    assert set(EXPECTED) <= scripts
    readme = (SAMPLES / "README.md").read_text()
    for name in EXPECTED:
        assert name in readme, f"{name} is missing from samples/README.md"


def test_samples_run_against_webpubsub_serve(served: str) -> None:
    running = {}
    for name in sorted(EXPECTED):
        # Own hubs keep parallel samples apart; one sample keeps the default hub.
        extra = {"WEBPUBSUB_HUB": f"sample_{Path(name).stem}"}
        if name == "authenticate_connection_string.py":
            del extra["WEBPUBSUB_HUB"]
        if name == "enable_logs.py":
            extra["AZURE_LOG_LEVEL"] = "verbose"  # the seed's way: no code change
        running[name] = subprocess.Popen(
            [sys.executable, str(SAMPLES / name)],
            cwd=ROOT,
            env=_env(served, **extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    failures = []
    for name, process in running.items():
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        if process.returncode != 0:
            failures.append(f"{name} exited {process.returncode}:\n{out}\n{err}")
            continue
        for marker in EXPECTED[name]:
            if marker not in out:
                failures.append(f"{name}: {marker!r} not in output:\n{out}")
        if name == "enable_logs.py":
            if "--> send_to_all POST" not in err or "<-- user_exists 404" not in err:
                failures.append(f"enable_logs.py logged no requests:\n{err}")
            if KEY in err or "eyJ" in err:
                failures.append("enable_logs.py leaked a secret into the logs")
    assert not failures, "\n\n".join(failures)


def test_samples_explain_a_missing_connection_string() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBPUBSUB_")}
    result = subprocess.run(
        [sys.executable, str(SAMPLES / "broadcast.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "WEBPUBSUB_CONNECTION_STRING" in result.stderr
