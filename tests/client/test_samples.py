"""The client samples run as scripts against the real service, the way a reader runs them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from tests.client.conftest import Connect
from tests.client.helpers import TIMEOUT, Recorder
from webpubsub.aio import WebPubSubServiceClient
from webpubsub.client import GroupMessage
from webpubsub.testing import ServiceThread

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


class Script:
    """A sample in a subprocess: write lines to it, await the lines it prints."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.output: list[str] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def run(cls, service: ServiceThread, hub: str, *args: str) -> AsyncIterator[Script]:
        env = {
            **os.environ,
            "WEBPUBSUB_CONNECTION_STRING": service.connection_string,
            "WEBPUBSUB_HUB": hub,
            "PYTHONUNBUFFERED": "1",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            cwd=SAMPLES,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        script = cls(process)
        try:
            yield script
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()

    async def line(self, starting: str) -> str:
        """Read output until a line starts with ``starting``."""
        assert self.process.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            while raw := await self.process.stdout.readline():
                self.output.append(raw.decode().rstrip("\n"))
                if self.output[-1].startswith(starting):
                    return self.output[-1]
        raise AssertionError(f"no line starting with {starting!r} in {self.output}")

    def write(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")

    async def exit_code(self) -> int:
        return await asyncio.wait_for(self.process.wait(), TIMEOUT)


async def test_chat(service: ServiceThread, hub: str, connect: Connect) -> None:
    bob = await connect("bob")
    inbox = Recorder(bob)
    await bob.join_group("lobby")
    async with Script.run(service, hub, "client_chat.py", "alice") as alice:
        await alice.line("* joined lobby as alice")
        alice.write("hello from the terminal")
        heard = await inbox.next(GroupMessage)
        assert (heard.from_user_id, heard.data) == ("alice", "hello from the terminal")
        await bob.send_to_group("lobby", "hi alice", "text")
        await alice.line("[lobby] bob: hi alice")
        await bob.send_to_group("lobby", {"emoji": "👋"}, "json")
        await alice.line('[lobby] bob: {"emoji": "👋"}')
        alice.write("/quit")
        assert await alice.exit_code() == 0


async def test_dashboard(service: ServiceThread, hub: str) -> None:
    args = ("client_dashboard.py", "--count", "3", "telemetry", "alerts")
    async with (
        Script.run(service, hub, *args) as dashboard,
        WebPubSubServiceClient.from_connection_string(
            service.connection_string, hub=hub
        ) as app_server,
    ):
        await dashboard.line("watching telemetry, alerts")
        await app_server.group("telemetry").send_to_all({"sensor": "t1", "value": 21.5})
        await app_server.group("alerts").send_to_all("door open", content_type="text/plain")
        await app_server.send_to_all(b"\x01\x02")
        assert await dashboard.line("[telemetry #1]") == (
            '[telemetry #1] json: {"sensor": "t1", "value": 21.5}'
        )
        assert await dashboard.line("[alerts #1]") == "[alerts #1] text: door open"
        assert await dashboard.line("[server]") == "[server] binary: <2 bytes>"
        assert await dashboard.line("summary:") == "summary: (server)=1, alerts=1, telemetry=1"
        assert await dashboard.exit_code() == 0
