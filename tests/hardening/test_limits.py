"""Every resource limit is a knob (``[limits]`` in the config file) and each one holds.

Each test starts a service with the knob turned low, crosses it, and checks the answer: an
HTTP status with an ``ErrorDetail`` body, an ack error, or a close code. The defaults are
checked once against the documented values.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.hardening.support import (
    JOIN,
    PING,
    SEND,
    TEXT,
    Census,
    RawWebSocket,
    assert_no_leaks,
    frame,
    running,
)
from tests.server.helpers import (
    JSON_SUBPROTOCOL,
    TIMEOUT,
    assert_error_detail,
    assert_raw_error,
    assert_refused,
    async_wait_until,
    client_token,
    client_url,
    close_all,
    connect_json,
    parse_http_response,
    raw_http,
    refused_handshake,
    rest_call,
    sign_rest,
    wait_until,
)
from webpubsub.server.config import MIB, Limits, load_settings
from webpubsub.testing import ServiceThread

HUB = "limits"


def test_defaults_are_the_documented_ones() -> None:
    limits = Limits()
    assert limits.max_message_size == MIB  # spec 6
    assert limits.max_body_size == MIB
    assert limits.max_group_name_length == 1024  # spec 1.1
    assert limits.max_groups_per_connection == 1000
    assert limits.max_connections >= 10_000
    assert limits.max_connections_per_hub <= limits.max_connections
    assert 0 < limits.client_message_rate <= limits.client_message_burst
    assert limits.keep_alive_interval < limits.idle_timeout
    assert limits.request_timeout <= 60


def test_every_knob_is_read_from_the_config_file(tmp_path: Path) -> None:
    knobs = {
        name: (value * 2 if name != "max_group_name_length" else 100)
        for name, value in vars(Limits()).items()
    }
    lines = ["[limits]", *(f"{name} = {value}" for name, value in knobs.items())]
    config = tmp_path / "webpubsub.toml"
    config.write_text("\n".join(lines) + "\n")
    settings = load_settings(str(config), env={})
    assert vars(settings.limits) == knobs


def open_sockets(service: ServiceThread, count: int) -> list[socket.socket]:
    return [
        socket.create_connection((service.settings.host, service.settings.port))
        for _ in range(count)
    ]


def protocols(service: ServiceThread) -> int:
    return Census.take(service).tcp


# -- connections ----------------------------------------------------------------------------


def test_max_connections_per_node() -> None:
    with running(max_connections=4) as service:
        idle = open_sockets(service, 4)
        wait_until(lambda: protocols(service) == 4, "4 connections")
        response = parse_http_response(raw_http(service, b"GET /api/health HTTP/1.1\r\n\r\n"))
        body = assert_raw_error(response, 503)
        assert body["code"] == "Error.ServiceUnavailable.TooManyConnections"
        assert response.headers["retry-after"] == "1"
        idle.pop().close()
        wait_until(lambda: protocols(service) == 3, "a free slot")
        response = parse_http_response(
            raw_http(service, b"HEAD /api/health HTTP/1.1\r\nConnection: close\r\n\r\n")
        )
        assert response.status == 200
        for sock in idle:
            sock.close()


async def test_max_connections_per_hub() -> None:
    with running(max_connections_per_hub=2) as service:
        first = await connect_json(service, HUB)
        second = await connect_json(service, HUB)
        url = client_url(service, HUB, token=client_token(service, HUB))
        body = assert_refused(await refused_handshake(url, subprotocols=[JSON_SUBPROTOCOL]), 429)
        assert body["code"] == "Error.TooManyConnections"
        other = await connect_json(service, "another")  # other hubs are not affected
        await first.close()
        await async_wait_until(
            lambda: Census.take(service).entries == 2, "the first client to be gone"
        )
        third = await connect_json(service, HUB)
        await close_all([second, other, third])


# -- groups -------------------------------------------------------------------------------


async def test_max_groups_per_connection() -> None:
    with running(max_groups_per_connection=3) as service:
        async with await connect_json(service, HUB, roles=[JOIN]) as client:
            for name in ("a", "b", "c"):
                assert (await client.join(name))["success"]
            ack = await client.join("d")
            assert ack["error"]["name"] == "BadRequest" and "3 groups" in ack["error"]["message"]
        token = client_token(service, HUB, groups=["a", "b", "c", "d"])
        url = client_url(service, HUB, token=token)
        assert_refused(await refused_handshake(url, subprotocols=[JSON_SUBPROTOCOL]), 400)


async def test_max_group_name_length() -> None:
    with running(max_group_name_length=10) as service:
        ok, long = "g" * 10, "g" * 11
        async with await connect_json(service, HUB, user_id="u", roles=[JOIN]) as client:
            assert (await client.join(ok))["success"]
            ack = await client.join(long)
            assert ack["error"]["name"] == "BadRequest"
            response = rest_call(service, "PUT", f"/api/hubs/{HUB}/users/u/groups/{long}")
            assert_error_detail(response, 400)
            body = json.dumps({"groups": [ok, long]}).encode()
            response = rest_call(
                service,
                "POST",
                f"/api/hubs/{HUB}/:addToGroups",
                content=body,
                content_type="application/json",
            )
            assert_error_detail(response, 400)
            assert rest_call(service, "PUT", f"/api/hubs/{HUB}/users/u/groups/{ok}").is_success
        url = client_url(service, HUB, token=client_token(service, HUB, groups=[long]))
        assert_refused(await refused_handshake(url, subprotocols=[JSON_SUBPROTOCOL]), 400)


# -- sizes ----------------------------------------------------------------------------------


async def test_max_message_size_rest_and_websocket() -> None:
    with running(max_message_size=1000) as service:
        path = f"/api/hubs/{HUB}/:send"
        ok = rest_call(service, "POST", path, content=b"x" * 1000, content_type="text/plain")
        assert ok.status_code == 202
        big = rest_call(service, "POST", path, content=b"x" * 1001, content_type="text/plain")
        assert_error_detail(big, 413)
        client = await connect_json(service, HUB, roles=[SEND])
        envelope = {"type": "sendToGroup", "group": "g", "dataType": "text", "data": ""}
        room = 1000 - len(json.dumps(envelope))
        assert (await client.publish("g", "y" * (room - 100), "text"))["success"]
        await client.send({**envelope, "data": "y" * 1000})
        code, _, _ = await client.until_closed()
        assert code == 1009


def test_max_body_size() -> None:
    with running(max_body_size=2000) as service:
        path = f"/api/hubs/{HUB}/:addToGroups"
        groups = json.dumps({"groups": ["g" * 1000, "h" * 1000]}).encode()
        assert len(groups) > 2000
        response = rest_call(service, "POST", path, content=groups, content_type="application/json")
        assert_error_detail(response, 413)
        # Announced too large: refused from the head, before any of the body is read.
        token = sign_rest(service.endpoint + path)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2001\r\n\r\n"
        ).encode()
        assert_raw_error(parse_http_response(raw_http(service, head)), 413)


def test_header_count_header_bytes_and_url_length() -> None:
    with running(max_header_count=10, max_header_bytes=600, max_url_length=200) as service:
        many = b"".join(b"X-%d: v\r\n" % i for i in range(11))
        raw = raw_http(service, b"GET /api/health HTTP/1.1\r\n" + many + b"\r\n")
        assert_raw_error(parse_http_response(raw), 431)
        large = b"X-Big: " + b"v" * 600 + b"\r\n"
        raw = raw_http(service, b"GET /api/health HTTP/1.1\r\n" + large + b"\r\n")
        assert_raw_error(parse_http_response(raw), 431)
        url = b"/client/hubs/" + b"h" * 200
        raw = raw_http(service, b"GET " + url + b" HTTP/1.1\r\nUpgrade: websocket\r\n\r\n")
        assert_raw_error(parse_http_response(raw), 414)
        nine = b"".join(b"X-%d: v\r\n" % i for i in range(9))
        raw = raw_http(
            service, b"HEAD /api/health HTTP/1.1\r\nConnection: close\r\n" + nine + b"\r\n"
        )
        assert parse_http_response(raw).status == 200


# -- message rate ---------------------------------------------------------------------------


async def test_client_message_rate() -> None:
    """Over the rate: ack ``Throttled`` (not executed, not recorded); a client that keeps
    going another burst's worth regardless is closed with 1008."""
    rate = 2
    with running(client_message_rate=rate, client_message_burst=5) as service:
        baseline = Census.take(service)
        client = await connect_json(service, HUB, roles=[JOIN])
        for i in range(8):
            await client.send({"type": "joinGroup", "group": f"g{i}", "ackId": 100 + i})
        acks = [await client.ack(100 + i) for i in range(8)]
        assert [ack["success"] for ack in acks] == [True] * 5 + [False] * 3
        for ack in acks[5:]:
            assert ack["error"]["name"] == "Throttled", ack
            assert ack["error"]["message"]
        # A throttled request may be retried with the same ackId once the rate allows.
        deadline = time.monotonic() + 3 * TIMEOUT
        while True:
            await client.send({"type": "joinGroup", "group": "g5", "ackId": 105})
            ack = await client.ack(105)
            if ack["success"]:
                break
            assert ack["error"]["name"] == "Throttled"
            assert time.monotonic() < deadline, "the rate never let a message through"
            await asyncio.sleep(1 / rate)  # the client backs off, as it should when throttled
        # Ignoring throttling: a burst's worth of refused messages in a row ends it.
        for _ in range(20):
            await client.send({"type": "ping"})
        code, reason, _ = await client.until_closed()
        assert code == 1008, (code, reason)
        await asyncio.to_thread(assert_no_leaks, service, baseline)


# -- time limits ----------------------------------------------------------------------------


def read_response(sock: socket.socket) -> bytes:
    received = b""
    while data := sock.recv(65536):
        received += data
    return received


@pytest.mark.parametrize(
    "partial",
    [
        b"GET /api/health HTTP/1.1\r\nHost: x\r\n",  # slow headers
        b"POST /api/hubs/h/:send HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",  # body
        b"GET /client/hubs/h HTTP/1.1\r\nUpgrade: websocket\r\n",  # slow handshake
    ],
    ids=["headers", "body", "upgrade"],
)
def test_request_timeout_cuts_slow_requests(partial: bytes) -> None:
    with (
        running(request_timeout=0.3) as service,
        socket.create_connection(
            (service.settings.host, service.settings.port), timeout=TIMEOUT
        ) as sock,
    ):
        started = time.monotonic()
        sock.sendall(partial)
        response = parse_http_response(read_response(sock))
        assert_raw_error(response, 408)
        assert time.monotonic() - started < 0.3 + 2


def test_slowloris_trickle_is_cut() -> None:
    """Each byte comes in time, the whole request does not: the limit is per request."""
    with (
        running(request_timeout=0.4) as service,
        socket.create_connection(
            (service.settings.host, service.settings.port), timeout=TIMEOUT
        ) as sock,
    ):
        sock.settimeout(0.05)  # the attacker's pace: one byte per 50 ms
        started = time.monotonic()
        received = b""
        for byte in b"GET /api/health HTTP/1.1\r\n" + b"X-Slow: " + b"z" * 200:
            try:
                sock.sendall(bytes([byte]))
                received = sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
            if received:
                break
        assert received, "the trickling request was never cut"
        sock.settimeout(TIMEOUT)
        received += read_response(sock)
        assert_raw_error(parse_http_response(received), 408)
        assert time.monotonic() - started < 2


def test_second_request_on_a_kept_alive_connection_is_timed_too() -> None:
    with (
        running(request_timeout=0.3) as service,
        socket.create_connection(
            (service.settings.host, service.settings.port), timeout=TIMEOUT
        ) as sock,
    ):
        sock.sendall(b"HEAD /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        assert_raw_error(parse_http_response(read_response(sock)), 408)


def test_idle_kept_alive_connection_is_closed_quietly() -> None:
    with running(keep_alive_timeout=0.3) as service:
        with socket.create_connection(
            (service.settings.host, service.settings.port), timeout=TIMEOUT
        ) as sock:
            sock.sendall(b"HEAD /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
            first = sock.recv(65536)
            assert first.startswith(b"HTTP/1.1 200"), first
            started = time.monotonic()
            assert read_response(sock) == b""  # closed without a word
            assert time.monotonic() - started < 2
        wait_until(lambda: protocols(service) == 0, "the idle connection to be gone")


async def test_idle_websocket_client_is_cut_and_a_live_one_is_not() -> None:
    """Pings every 0.1 s; a client silent for 0.5 s (it answers no ping) is closed with
    1011, while a client whose library answers pings stays."""
    with running(keep_alive_interval=0.1, idle_timeout=0.5, close_timeout=0.5) as service:
        baseline = Census.take(service)
        token = client_token(service, HUB, user_id="live")
        live = await connect(
            client_url(service, HUB, token=token),
            subprotocols=[JSON_SUBPROTOCOL],  # type: ignore[list-item]
        )
        silent = RawWebSocket(service, HUB, subprotocol=JSON_SUBPROTOCOL)

        def cut() -> tuple[int | None, int]:
            pings = 0
            while (received := silent.receive()) is not None:
                if received.opcode == PING:
                    pings += 1
                elif received.close_code is not None:
                    return received.close_code, pings
            return None, pings

        started = time.monotonic()
        code, pings = await asyncio.to_thread(cut)
        silent.close()
        assert code == 1011
        assert pings >= 2
        assert time.monotonic() - started >= 0.5
        # The live client went through the same time and answered every ping.
        await live.send(json.dumps({"type": "ping"}))
        messages = [json.loads(await asyncio.wait_for(live.recv(), TIMEOUT)) for _ in range(2)]
        assert {"type": "pong"} in messages
        await live.close()
        await asyncio.to_thread(assert_no_leaks, service, baseline)


def test_tcp_connection_that_never_speaks_is_closed() -> None:
    """A connection that sends nothing at all gets the request timeout too (408)."""
    with (
        running(request_timeout=0.2) as service,
        socket.create_connection(
            (service.settings.host, service.settings.port), timeout=TIMEOUT
        ) as sock,
    ):
        assert_raw_error(parse_http_response(read_response(sock)), 408)


def test_flood_of_small_messages_on_a_socket_is_bounded_by_the_rate() -> None:
    """Raw frames, no waiting for answers: the rate decides, not the attacker's speed."""
    with running(client_message_rate=100, client_message_burst=50) as service:
        with RawWebSocket(service, HUB, subprotocol=JSON_SUBPROTOCOL, roles=[JOIN]) as ws:
            assert ws.next_data() is not None
            joins = b"".join(
                frame(TEXT, b'{"type":"joinGroup","group":"g%d","ackId":%d}' % (i, i))
                for i in range(200)
            )
            ws.send(joins)
            code, frames = ws.until_closed()
        assert code == 1008
        acks = [json.loads(f.payload) for f in frames if f.opcode == TEXT]
        acks = [a for a in acks if a["type"] == "ack"]
        allowed = sum(1 for a in acks if a["success"])
        assert 50 <= allowed < 60, allowed  # the burst, plus what refilled meanwhile
        assert all(a["error"]["name"] == "Throttled" for a in acks if not a["success"])
