"""The upstream path under attack (issue 13, items 7, 8, 10 and 11), over real sockets.

* non-ASCII user ids and event names reach the handler percent-encoded, and no exception
  can wedge an upgrade or a connection's event queue;
* an event handler's answer is read with a cap, never whole;
* a client that leaves during its ``connect`` event costs the handler nothing more;
* the user events queued on a node are capped in bytes, and released when clients leave.

The event handler is ``tests/upstream_app.py`` (a stdlib HTTP server in a thread); waits are
on conditions with deadlines, never fixed sleeps.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from urllib.parse import unquote

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import ACCESS_KEY
from tests.server.helpers import (
    assert_refused,
    async_wait_until,
    client_token,
    client_url,
    connect_json,
    connect_raw,
    refused_handshake,
    wait_until,
)
from tests.upstream_app import Reply, UpstreamApp
from webpubsub.core.events import EventHandlerSettings, HubSettings
from webpubsub.server.config import Limits, Settings
from webpubsub.testing import ServiceThread

HUB = "upstream"
KIB = 1024
MIB = 1024 * KIB


@pytest.fixture
def app() -> Iterator[UpstreamApp]:
    with UpstreamApp() as running:
        yield running


def start(app: UpstreamApp, **limits: object) -> ServiceThread:
    """A service of its own whose hubs send every event to ``app``."""
    handler = EventHandlerSettings(app.url_template)
    settings = Settings(
        port=0,
        access_keys=[ACCESS_KEY],
        limits=Limits(**limits),  # type: ignore[arg-type]
        hubs={"*": HubSettings((handler,))},
    )
    return ServiceThread(settings)


def event(name: str, ack_id: int, data: str = "x") -> dict[str, object]:
    return {"type": "event", "event": name, "ackId": ack_id, "dataType": "text", "data": data}


# -- item 7: non-ASCII identities and event names ----------------------------------------


async def test_non_ascii_user_id_goes_through_every_event(app: UpstreamApp) -> None:
    app.rules["héllo"] = Reply(200, "réponse".encode(), {"Content-Type": "text/plain"})
    with start(app) as service:
        client = await connect_json(service, HUB, user_id="张伟")
        assert client.user_id == "张伟"
        await client.send(event("héllo", 1))
        reply = await client.receive()
        assert reply["data"] == "réponse", reply
        assert (await client.ack(1))["success"]
        await client.close()
        app.wait_for(lambda seen: any(r.event == "disconnected" for r in seen))
    for name in ("connect", "connected", "héllo", "disconnected"):
        [request] = app.events(name)
        # On the wire: percent-encoded UTF-8 (CloudEvents HTTP binding 3.1.3.2), ASCII only.
        assert request.headers["ce-userid"] == "%E5%BC%A0%E4%BC%9F", name
        assert unquote(request.headers["ce-userid"]) == "张伟"
    [user_event] = app.events("héllo")
    assert user_event.headers["ce-eventname"] == "h%C3%A9llo"
    assert user_event.headers["ce-type"] == "azure.webpubsub.user.h%C3%A9llo"
    assert user_event.path == f"/{HUB}/h%C3%A9llo"


async def test_non_ascii_user_id_with_a_connect_handler_is_answered(app: UpstreamApp) -> None:
    with start(app) as service:
        async with await connect_json(service, HUB, user_id="José") as client:
            assert client.user_id == "José"
    [connect] = app.events("connect")
    assert unquote(connect.headers["ce-userid"]) == "José"


async def test_non_ascii_event_name_does_not_wedge_the_queue(app: UpstreamApp) -> None:
    with start(app) as service:
        async with await connect_json(service, HUB) as client:
            await client.send(event("héllo", 1))
            await client.send(event("work", 2))
            await client.send(event('a b"c%d/e?f', 3))
            for ack_id in (1, 2, 3):
                assert (await client.ack(ack_id))["success"], ack_id
    system = ("connect", "connected", "disconnected")
    user_events = [r.event for r in app.requests if r.method == "POST" and r.event not in system]
    assert user_events == ["héllo", "work", 'a b"c%d/e?f']


async def test_unexpected_failures_answer_the_upgrade_and_the_events(app: UpstreamApp) -> None:
    # An auth header httpx cannot encode: every call fails with an exception that is not
    # an HTTP error. The upgrade must still be answered, and later events too.
    handler = EventHandlerSettings(app.url_template, auth_header=("X-Key", "clé"))
    settings = Settings(port=0, access_keys=[ACCESS_KEY], hubs={"*": HubSettings((handler,))})
    with ServiceThread(settings) as service:
        token = client_token(service, HUB, user_id="u")
        response = await refused_handshake(client_url(service, HUB, token=token))
        assert_refused(response, 500)
        # Without a connect handler the client gets in; its events are acked with an error.
        events_only = EventHandlerSettings(
            app.url_template, system_events=(), auth_header=("X-Key", "clé")
        )
        service.call(lambda: service.settings.hubs.__setitem__("*", HubSettings((events_only,))))
        async with await connect_json(service, HUB) as client:
            await client.send(event("one", 1))
            await client.send(event("two", 2))
            for ack_id in (1, 2):
                ack = await client.ack(ack_id)
                assert ack["error"]["name"] == "InternalServerError", ack


# -- item 8: answers read with a cap ------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_huge_user_event_answer_is_refused_unread(app: UpstreamApp, chunked: bool) -> None:
    app.rules["big"] = Reply(
        200, headers={"Content-Type": "text/plain"}, stream=100 * MIB, chunked=chunked
    )
    app.rules["small"] = Reply(200, b"ok", {"Content-Type": "text/plain"})
    with start(app, max_message_size=64 * KIB) as service:
        async with await connect_json(service, HUB) as client:
            await client.send(event("big", 1))
            ack = await client.ack(1)
            assert ack["error"]["name"] == "InternalServerError", ack
            # Nothing of the answer was relayed, and the connection goes on.
            await client.send(event("small", 2))
            assert (await client.receive())["data"] == "ok"
            assert (await client.ack(2))["success"]
        [written] = app.wait_streamed()
    assert written < 100 * MIB // 4, f"the service read {written} bytes of a 100 MiB answer"


async def test_huge_answer_closes_a_simple_client(app: UpstreamApp) -> None:
    app.rules["message"] = Reply(200, stream=2 * MIB)
    with start(app, max_message_size=64 * KIB) as service:
        ws = await connect_raw(service, HUB)
        await ws.send("hi")
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1011


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_connect_answer_over_its_cap_is_refused(app: UpstreamApp, chunked: bool) -> None:
    answer = json.dumps({"userId": "u", "roles": ["x" * 2000]}).encode()
    app.rules["connect"] = Reply(
        200, answer, {"Content-Type": "application/json"}, stream=10 * MIB, chunked=chunked
    )
    with start(app, max_connect_response_size=1024) as service:
        token = client_token(service, HUB, user_id="u")
        response = await refused_handshake(client_url(service, HUB, token=token))
        assert_refused(response, 500)
        [written] = app.wait_streamed()
    assert written < 10 * MIB // 2, f"the service read {written} bytes of a 10 MiB answer"


async def test_connect_answer_at_its_cap_is_used(app: UpstreamApp) -> None:
    answer = json.dumps({"userId": "capped"}).encode()
    app.rules["connect"] = Reply(200, answer, {"Content-Type": "application/json"})
    with start(app, max_connect_response_size=len(answer)) as service:
        async with await connect_json(service, HUB) as client:
            assert client.user_id == "capped"


# -- item 10: abandoned handshakes ----------------------------------------------------------


def upgrade_request(service: ServiceThread, n: int) -> bytes:
    token = client_token(service, HUB, user_id="dropper")
    return (
        f"GET /client/hubs/{HUB}?access_token={token}&n={n} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{service.settings.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


def open_protocols(service: ServiceThread) -> int:
    return service.call(lambda: len(service.service.protocols))


async def test_abandoned_handshakes_do_not_call_connect(app: UpstreamApp) -> None:
    release = threading.Event()
    held = Reply(204, hold=release)
    app.rules["connect"] = [held, held, Reply(204)]  # two calls hang, the next ones answer
    try:
        with start(app, upstream_concurrency=2) as service:
            sockets = [
                socket.create_connection(("127.0.0.1", service.settings.port)) for _ in range(10)
            ]
            for n, sock in enumerate(sockets):
                sock.sendall(upgrade_request(service, n))
            # Two connect calls are in flight (the hub's slots), eight wait for a slot.
            seen = app.wait_for(lambda seen: sum(r.event == "connect" for r in seen) == 2)
            wait_until(lambda: open_protocols(service) == 10, "the ten upgrades")
            in_flight = {
                int(json.loads(r.body)["query"]["n"][0]) for r in seen if r.event == "connect"
            }
            # The waiting ones leave first, then those in flight (so no slot is handed to a
            # client whose leaving the service has not seen yet).
            for n, sock in enumerate(sockets):
                if n not in in_flight:
                    sock.close()
            wait_until(lambda: open_protocols(service) == 2, "the service to see 8 go")
            for n in in_flight:
                sockets[n].close()
            wait_until(lambda: open_protocols(service) == 0, "the service to see 2 more go")
            # Their calls were cancelled, so the slots are free: a real client gets in at
            # once, though the two abandoned calls have not been answered.
            async with await connect_json(service, HUB, user_id="real") as client:
                assert client.user_id == "real"
            assert not release.is_set()
        # The eight that waited for a slot were never sent.
        assert len(app.events("connect")) == 3
    finally:
        release.set()


# -- item 11: queued event bytes per node ---------------------------------------------------


def pending_bytes(service: ServiceThread) -> int:
    return service.call(lambda: service.service.upstream.pending_bytes)


async def test_queued_event_bytes_are_capped_per_node_and_released(app: UpstreamApp) -> None:
    release = threading.Event()
    app.rules["work"] = Reply(204, hold=release)
    app.rules["quick"] = Reply(204)
    data = "x" * (100 * KIB)
    size = len(data) + len("work")
    try:
        with start(app, max_pending_event_bytes=3 * size + 10) as service:
            first = await connect_json(service, HUB)
            second = await connect_json(service, HUB)
            for ack_id in (1, 2, 3):  # one in flight, two queued: the node's cap is reached
                await first.send(event("work", ack_id, data))
            app.wait_for(lambda seen: any(r.event == "work" for r in seen))
            await async_wait_until(lambda: pending_bytes(service) == 3 * size, "3 queued")
            await second.send(event("work", 1, data))
            ack = await second.ack(1)
            assert ack["error"]["name"] == "Throttled", ack
            simple = await connect_raw(service, HUB)
            await simple.send(data)  # a simple client has no acks: it is closed with 1013
            with pytest.raises(ConnectionClosed):
                await simple.recv()
            assert simple.close_code == 1013

            # The first client leaves: its queued events go, and their bytes with them.
            await first.close()
            await async_wait_until(lambda: pending_bytes(service) == size, "queued dropped")
            release.set()  # the one in flight ends; then nothing is held
            await async_wait_until(lambda: pending_bytes(service) == 0, "all released")
            await second.send(event("quick", 2, data))
            assert (await second.ack(2))["success"]
            await second.close()
        assert len(app.events("work")) == 1  # the dropped ones were never sent
    finally:
        release.set()
