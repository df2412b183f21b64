"""A recovery storm: no message lost or duplicated while connections keep dropping (spec 4.7).

A publisher sends numbered messages to a group without pause while the TCP connections of
the group's reliable clients are cut at random moments (seeded), well over a hundred times.
The clients are this project's client on both reliable subprotocols and the official
``@azure/web-pubsub-client``; at the end each has every message once, in order.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import ACCESS_KEY
from tests.nodejs import NodeDriver, node_missing
from webpubsub.aio import WebPubSubServiceClient
from webpubsub.auth.tokens import client_audience, mint_client_token
from webpubsub.client import GroupMessage, ReconnectPolicy, WebPubSubClient
from webpubsub.testing import ServiceThread

SEED = 20261127
MIN_DROPS = 100
MAX_JS_DROPS = 8  # the JS client waits 1 s before each recovery attempt
DEADLINE = 45.0  # seconds for the whole storm
PYTHON_CLIENTS = [
    ("json1", "json.reliable.webpubsub.azure.v1"),
    ("json2", "json.reliable.webpubsub.azure.v1"),
    ("proto1", "protobuf.reliable.webpubsub.azure.v1"),
    ("proto2", "protobuf.reliable.webpubsub.azure.v1"),
]
ROLES = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]


def client_url(service: ServiceThread, hub: str) -> str:
    audience = client_audience(service.endpoint, hub)
    token = mint_client_token(ACCESS_KEY, audience, roles=ROLES)
    return audience.replace("http://", "ws://") + f"?access_token={token}"


def attached_socket(service: ServiceThread, connection_id: str) -> Callable[[], bool]:
    """A probe run on the service loop: abort the connection's socket if it has one."""

    def abort() -> bool:
        for proto in list(service.service.protocols):
            conn = proto.conn
            if (
                conn is not None
                and conn.connection_id == connection_id
                and conn.transport is proto
                and conn.attached
                and proto.transport is not None
                and not proto.transport.is_closing()
            ):
                proto.transport.abort()
                return True
        return False

    return abort


async def start_storm_clients(
    url: str, group: str
) -> tuple[dict[str, WebPubSubClient], dict[str, list[str]], dict[str, str]]:
    """This project's clients of PYTHON_CLIENTS, quick to recover, in ``group``: the
    clients, what each receives (filled as it arrives) and their connection ids."""
    received: dict[str, list[str]] = {name: [] for name, _ in PYTHON_CLIENTS}
    clients: dict[str, WebPubSubClient] = {}
    connection_ids: dict[str, str] = {}
    for name, protocol in PYTHON_CLIENTS:
        client = WebPubSubClient(
            url,
            protocol=protocol,
            recovery_delay=0.02,
            reconnect_policy=ReconnectPolicy(initial_delay=0.02, max_delay=0.1, jitter=0),
        )

        def record(message: GroupMessage, inbox: list[str] = received[name]) -> None:
            inbox.append(str(message.data))

        client.on("group-message", record)
        await client.start()
        await client.join_group(group)
        clients[name] = client
        assert client.connection_id is not None
        connection_ids[name] = client.connection_id
    return clients, received, connection_ids


async def assert_every_inbox(
    received: dict[str, list[str]],
    sent: list[str],
    clients: dict[str, WebPubSubClient],
    connection_ids: dict[str, str],
    deadline: float,
) -> None:
    """Once every inbox has the last message ("end"): each holds every message sent, once,
    in order, on the connection its client started with (recovered, never new)."""
    while any(not inbox or inbox[-1] != "end" for inbox in received.values()):
        assert time.monotonic() < deadline, "messages missing at the end"
        await asyncio.sleep(0.05)  # polling for the inboxes, not a wait for an effect
    for name, inbox in received.items():
        assert inbox == sent, f"{name} lost or duplicated messages"
        assert clients[name].connection_id == connection_ids[name]  # recovered, not new


async def test_recovery_storm(service: ServiceThread, hub: str) -> None:
    group = "storm"
    clients, received, connection_ids = await start_storm_clients(client_url(service, hub), group)

    js: NodeDriver | None = None
    if node_missing() is None:
        js = NodeDriver("client.mjs")
        js.request("start", client="js", url=client_url(service, hub), protocol="reliable")
        connected = js.wait_for(lambda line: line.get("event") == "connected", "js connected")
        connection_ids["js"] = connected["connectionId"]
        js.request("call", client="js", method="joinGroup", args=[group])
    elif os.environ.get("CI"):
        pytest.fail(f"the storm must include the official JS client: {node_missing()}")

    rng = random.Random(SEED)
    sent: list[str] = []
    drops: dict[str, int] = dict.fromkeys(connection_ids, 0)
    done = asyncio.Event()
    started = time.monotonic()

    async with WebPubSubServiceClient.from_connection_string(
        service.connection_string, hub=hub
    ) as rest:

        async def publish() -> None:
            while not done.is_set():
                text = str(len(sent))
                await rest.group(group).send_to_all(text, content_type="text/plain")
                sent.append(text)
                await asyncio.sleep(0)  # let the dropper in between any two messages

        async def drop() -> None:
            while sum(drops.values()) < MIN_DROPS:
                assert time.monotonic() - started < DEADLINE, f"storm too slow: {drops}"
                names = [n for n in connection_ids if n != "js" or drops["js"] < MAX_JS_DROPS]
                name = rng.choice(names)
                await asyncio.sleep(rng.uniform(0, 0.06))  # a random moment
                if service.call(attached_socket(service, connection_ids[name])):
                    drops[name] += 1
            done.set()

        await asyncio.gather(publish(), drop())
        await rest.group(group).send_to_all("end", content_type="text/plain")
        sent.append("end")

    await assert_every_inbox(received, sent, clients, connection_ids, started + DEADLINE + 30)
    if js is not None:
        js_inbox: list[Any] = []
        while not js_inbox or js_inbox[-1] != "end":
            line = js.wait_for(
                lambda line: line.get("event") == "group-message", "js messages", timeout=30
            )
            js_inbox.append(line["message"]["data"])
        assert js_inbox == sent, f"the JS client lost or duplicated messages ({drops['js']} drops)"
        assert js.unread(lambda line: line.get("event") in ("connected", "disconnected")) == []
        js.close()
    for client in clients.values():
        await client.stop()
    assert sum(drops.values()) >= MIN_DROPS
    print(f"storm: {len(sent)} messages, drops per client {drops}")
