"""``webpubsub.testing``: the pytest plugin's fixtures and the recording clients.

These tests use the plugin exactly as an app's test suite would. Until the ``pytest11``
entry point is installed, this module loads the plugin itself.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

import httpx
import pytest

import webpubsub
import webpubsub.aio
from webpubsub.core.events import HubSettings
from webpubsub.core.message import DataType
from webpubsub.testing import (
    AckError,
    ClientClosedError,
    ClientFactory,
    GroupMessage,
    RawMessage,
    ServerMessage,
    ServiceThread,
    Settings,
)

PLUGIN = "webpubsub.testing.plugin"
INSTALLED = any(ep.value == PLUGIN for ep in entry_points(group="pytest11"))
pytest_plugins = [] if INSTALLED else [PLUGIN]

ROOT = Path(__file__).resolve().parents[2]
TALK = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


class TestFixtures:
    def test_a_running_service_and_its_connection_string(
        self, webpubsub_service: ServiceThread, webpubsub_connection_string: str
    ) -> None:
        assert webpubsub_connection_string.startswith(f"Endpoint={webpubsub_service.endpoint};")
        assert httpx.get(f"{webpubsub_service.endpoint}/readyz").status_code == 200

    def test_each_test_gets_its_own_service(
        self,
        webpubsub_service: ServiceThread,
        webpubsub_service_client: webpubsub.WebPubSubServiceClient,
    ) -> None:
        assert not webpubsub_service_client.group_exists("room")  # nothing left from others

    async def test_service_client_to_recording_client(
        self,
        webpubsub_service_client: webpubsub.WebPubSubServiceClient,
        webpubsub_client_factory: ClientFactory,
    ) -> None:
        alice = await webpubsub_client_factory.connect(user_id="alice")
        assert alice.user_id == "alice"
        assert webpubsub_service_client.connection_exists(alice.connection_id)
        webpubsub_service_client.send_to_user("alice", {"hello": "alice"})
        message = await alice.receive(timeout=5)
        assert message == ServerMessage({"hello": "alice"}, DataType.JSON)

    async def test_the_async_service_client(
        self,
        webpubsub_async_service_client: webpubsub.aio.WebPubSubServiceClient,
        webpubsub_client_factory: ClientFactory,
    ) -> None:
        client = await webpubsub_client_factory.connect()
        await webpubsub_async_service_client.send_to_all("hi", content_type="text/plain")
        assert await client.receive_data() == "hi"


class TestSettingsOverride:
    """A test module or conftest replaces ``webpubsub_settings`` to configure hubs."""

    @pytest.fixture
    def webpubsub_settings(self) -> Settings:
        return Settings(port=0, hubs={"*": HubSettings(allow_anonymous=True)})

    async def test_anonymous_clients(
        self, webpubsub_service: ServiceThread, webpubsub_client_factory: ClientFactory
    ) -> None:
        url = f"{webpubsub_service.endpoint.replace('http', 'ws', 1)}/client/hubs/hub"
        client = await webpubsub_client_factory.connect(url=url)
        assert client.user_id is None and client.connection_id


class TestRecordingClient:
    async def test_groups_acks_and_no_echo(self, webpubsub_client_factory: ClientFactory) -> None:
        alice = await webpubsub_client_factory.connect(user_id="alice", roles=TALK)
        bob = await webpubsub_client_factory.connect(user_id="bob", groups=["room"])
        await alice.join_group("room")
        await alice.send_to_group("room", {"n": 1}, "json", no_echo=True)
        await alice.send_to_group("room", b"\x00\x01", DataType.BINARY)
        first, second = await bob.receive(), await bob.receive()
        assert first == GroupMessage("room", {"n": 1}, DataType.JSON, "alice")
        assert isinstance(second, GroupMessage) and second.data == b"\x00\x01"
        # no_echo: alice's first message to herself is the second one.
        assert (await alice.receive()).data == b"\x00\x01"
        assert len(bob.messages) == 2 and len(bob.frames) >= 3  # plus "connected"

    async def test_a_refused_request_raises_ack_error(
        self, webpubsub_client_factory: ClientFactory
    ) -> None:
        client = await webpubsub_client_factory.connect()
        with pytest.raises(AckError) as refused:
            await client.join_group("vip")
        assert refused.value.name == "Forbidden"

    async def test_receive_times_out(self, webpubsub_client_factory: ClientFactory) -> None:
        client = await webpubsub_client_factory.connect()
        with pytest.raises(TimeoutError, match="0 received so far"):
            await client.receive(timeout=0.05)

    async def test_closed_by_the_service(
        self,
        webpubsub_service_client: webpubsub.WebPubSubServiceClient,
        webpubsub_client_factory: ClientFactory,
    ) -> None:
        client = await webpubsub_client_factory.connect(user_id="u")
        webpubsub_service_client.close_user_connections("u", reason="go away")
        assert await client.wait_closed() == (1000, "go away")
        assert client.disconnected is not None and client.disconnected.message == "go away"
        with pytest.raises(ClientClosedError):
            await client.receive()

    @pytest.mark.parametrize(
        "subprotocol",
        [
            "json.reliable.webpubsub.azure.v1",
            "protobuf.webpubsub.azure.v1",
            "protobuf.reliable.webpubsub.azure.v1",
        ],
    )
    async def test_other_subprotocols(
        self,
        subprotocol: str,
        webpubsub_service: ServiceThread,
        webpubsub_service_client: webpubsub.WebPubSubServiceClient,
        webpubsub_client_factory: ClientFactory,
    ) -> None:
        client = await webpubsub_client_factory.connect(subprotocol=subprotocol, user_id="p")
        for n in range(3):
            webpubsub_service_client.send_to_user("p", f"m{n}", content_type="text/plain")
        assert [(await client.receive()).data for _ in range(3)] == ["m0", "m1", "m2"]
        if "reliable" in subprotocol:
            # The client acknowledges every sequence id: the resend buffer drains.
            def pending() -> int:
                conn = webpubsub_service.service.node.find_connection("hub", client.connection_id)
                assert conn is not None and conn.recovery is not None
                return len(conn.recovery.buffer)

            await _until(lambda: webpubsub_service.call(pending) == 0)

    async def test_simple_clients(
        self,
        webpubsub_service_client: webpubsub.WebPubSubServiceClient,
        webpubsub_client_factory: ClientFactory,
    ) -> None:
        raw = await webpubsub_client_factory.connect(subprotocol=None)
        webpubsub_service_client.send_to_all("plain", content_type="text/plain")
        webpubsub_service_client.send_to_all(b"\x07", content_type="application/octet-stream")
        assert await raw.receive() == RawMessage("plain")
        binary = await raw.receive()
        assert binary.data == b"\x07" and binary.data_type is DataType.BINARY
        with pytest.raises(RuntimeError):
            _ = raw.connection_id


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``check()`` until true (off the event loop: it may block), with a deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(check):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")


def test_the_sample_runs_with_the_plugin() -> None:
    """``samples/test_with_fixture.py`` (an app's own tests) passes under pytest."""
    # Plugins the sample does not use are left out: they only slow the start down.
    unused = ["no:cacheprovider", "no:schemathesis", "no:hypothesispytest"]
    command = [sys.executable, "-m", "pytest", "-q", *(f"-p{name}" for name in unused)]
    if not INSTALLED:
        command += ["-p", PLUGIN]
    result = subprocess.run(
        [*command, str(ROOT / "samples" / "test_with_fixture.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
