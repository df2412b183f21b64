"""Graceful shutdown: SIGTERM drains within ``limits.shutdown_grace``.

Stop accepting; close every client with 1001 (after a ``disconnected`` message) so SDKs
reconnect elsewhere; answer the REST requests already under way, with
``Connection: close``; close idle keep-alive connections at once; after the grace period,
abort whatever is left and exit.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from tests.conftest import ACCESS_KEY
from tests.hardening.process import ServiceProcess
from tests.hardening.support import RawWebSocket, running
from tests.server.helpers import (
    JSON_SUBPROTOCOL,
    TIMEOUT,
    connect_json,
    open_json_url,
    parse_http_response,
    sign_rest,
    wait_until,
)
from webpubsub.auth.tokens import mint_client_token
from webpubsub.testing import ServiceThread

HUB = "drain"


def stop_in_background(service: ServiceThread) -> Future[None]:
    """Start ``Service.stop`` on the service loop (what SIGTERM does); returns its future."""
    assert service._loop is not None
    return asyncio.run_coroutine_threadsafe(service.service.stop(), service._loop)  # type: ignore[return-value]


def send_request_head(service: ServiceThread, body_length: int) -> socket.socket:
    path = f"/api/hubs/{HUB}/:send"
    token = sign_rest(service.endpoint + path)
    sock = socket.create_connection((service.settings.host, service.settings.port), timeout=TIMEOUT)
    sock.sendall(
        (
            f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: text/plain\r\nContent-Length: {body_length}\r\n\r\n"
        ).encode()
    )
    return sock


def read_all(sock: socket.socket) -> bytes:
    received = b""
    while data := sock.recv(65536):
        received += data
    return received


async def test_stop_drains_clients_and_requests_in_flight() -> None:
    with running(shutdown_grace=10) as service:
        client = await connect_json(service, HUB)
        idle = socket.create_connection((service.settings.host, service.settings.port))
        idle.sendall(b"HEAD /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(65536).startswith(b"HTTP/1.1 200")
        upload = send_request_head(service, 10)
        upload.sendall(b"half.")

        def mid_request() -> bool:
            return service.call(lambda: any(p._in_request for p in service.service.protocols))

        await asyncio.to_thread(wait_until, mid_request, "the upload to be under way")
        started = time.monotonic()
        stopping = stop_in_background(service)

        # Clients are told and closed with 1001 (going away).
        code, reason, frames = await client.until_closed()
        assert code == 1001, (code, reason)
        assert frames[-1]["event"] == "disconnected"
        # The idle keep-alive connection is closed at once, without a response.
        assert await asyncio.to_thread(read_all, idle) == b""
        # Nothing new is accepted.
        with pytest.raises(OSError):
            socket.create_connection((service.settings.host, service.settings.port), timeout=1)
        # The upload in flight completes, and is answered with Connection: close.
        upload.sendall(b"rest.")
        response = parse_http_response(await asyncio.to_thread(read_all, upload))
        assert response.status == 202
        assert response.headers["connection"] == "close"
        await asyncio.wrap_future(stopping)
        assert time.monotonic() - started < 10 / 2, "drained without waiting out the grace"
        for sock in (idle, upload):
            sock.close()


def test_grace_period_bounds_the_drain() -> None:
    """A client that never answers the close, an upload that never ends: aborted at the end
    of the grace period."""
    with running(shutdown_grace=0.5, close_timeout=30) as service:
        silent = RawWebSocket(service, HUB, subprotocol=JSON_SUBPROTOCOL)
        upload = send_request_head(service, 10)
        upload.sendall(b"half")
        wait_until(
            lambda: service.call(lambda: any(p._in_request for p in service.service.protocols)),
            "the upload to be under way",
        )
        started = time.monotonic()
        stop_in_background(service).result(timeout=TIMEOUT)
        elapsed = time.monotonic() - started
        assert 0.5 <= elapsed < 0.5 + 2, elapsed
        assert read_all(upload) == b""  # aborted, never answered
        code, _ = silent.until_closed()
        assert code == 1001
        silent.close()
        upload.close()


async def test_sigterm_drains_and_exits(tmp_path: Path) -> None:
    config = tmp_path / "webpubsub.toml"
    config.write_text("[limits]\nshutdown_grace = 3\n")
    with ServiceProcess("--access-key", ACCESS_KEY, "--config", str(config)) as process:
        audience = f"{process.endpoint}/client/hubs/{HUB}"
        token = mint_client_token(ACCESS_KEY, audience, user_id="u")
        client = await open_json_url("ws" + audience[len("http") :] + f"?access_token={token}")
        started = time.monotonic()
        process.signal(signal.SIGTERM)
        code, _, frames = await client.until_closed()
        assert code == 1001
        assert frames[-1] == {
            "type": "system",
            "event": "disconnected",
            "message": "Service is shutting down.",
        }
        status = await asyncio.to_thread(process.wait, 10)
        assert status == 0, process.stderr_text[-2000:]
        assert time.monotonic() - started < 3, "the drain waited out the grace for nothing"
        assert "shutting down" in process.stderr_text
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", process.port), timeout=1)


async def test_restart_on_the_same_port() -> None:
    """After a drain, a new process binds the same port at once, and clients come back."""
    first = ServiceProcess("--access-key", ACCESS_KEY).start()
    port = first.port
    audience = f"{first.endpoint}/client/hubs/{HUB}"
    url = (
        "ws" + audience[len("http") :] + f"?access_token={mint_client_token(ACCESS_KEY, audience)}"
    )
    client = await open_json_url(url)
    first.signal(signal.SIGTERM)
    code, _, _ = await client.until_closed()
    assert code == 1001
    assert await asyncio.to_thread(first.wait, 10) == 0
    with ServiceProcess("--access-key", ACCESS_KEY, "--port", str(port)) as second:
        assert second.port == port
        again = await open_json_url(url)
        await again.send({"type": "ping"})
        assert await again.receive() == {"type": "pong"}
        await again.close()
