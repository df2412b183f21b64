"""Helpers of the hardening tests: services with chosen limits, leak census, raw WebSocket.

* :func:`running` starts a :class:`ServiceThread` with the test keys and some limits;
* :class:`Census` counts what a connection may leave behind on the service (TCP
  protocols, hub entries, recovering connections, asyncio tasks, open file descriptors) and
  :func:`assert_no_leaks` waits until the counts come back to a baseline;
* :class:`RawWebSocket` is a blocking client that sends any bytes after a real handshake
  (malformed frames no WebSocket library would produce) and parses what comes back;
* :func:`frame` builds a client frame with every field under the caller's control.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from tests.conftest import ACCESS_KEY
from tests.server.helpers import TIMEOUT, client_token
from webpubsub.server.config import Limits, Settings
from webpubsub.testing import ServiceThread

JOIN = "webpubsub.joinLeaveGroup"
SEND = "webpubsub.sendToGroup"

# RFC 6455 5.2 opcodes
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


@contextmanager
def running(**limits: Any) -> Iterator[ServiceThread]:
    """A service of its own on a free port, with these ``Limits`` knobs changed."""
    settings = Settings(port=0, access_keys=[ACCESS_KEY], limits=Limits(**limits))
    with ServiceThread(settings) as service:
        yield service


# -- leaks --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Census:
    """What the service holds for connections, counted on its own loop."""

    protocols: int  # TCP connections, but for idle kept-alive HTTP ones (see below)
    hubs: int  # hubs with a connection here
    entries: int  # connections + user entries + group entries, over every hub
    recovering: int  # reliable connections waiting for their client
    tasks: int  # asyncio tasks on the service loop
    fds: int  # file descriptors open in this (test) process
    tcp: int = dataclasses.field(default=0, compare=False)  # every TCP connection

    @classmethod
    def take(cls, service: ServiceThread) -> Census:
        import asyncio

        def count() -> Census:
            node = service.service.node
            entries = sum(
                len(hub.connections) + len(hub.users) + len(hub.groups)
                for hub in node.hubs.values()
            )
            # An HTTP connection waiting for its next request is the client's pool (the
            # test helpers keep one), bounded by keep_alive_timeout: not a leak.
            busy = [
                p
                for p in service.service.protocols
                if p.ws is not None or p._serving or p._in_request or p._requests
            ]
            return cls(
                protocols=len(busy),
                hubs=len(node.hubs),
                entries=entries,
                recovering=len(node.recovering),
                tasks=len(asyncio.all_tasks()),
                fds=len(os.listdir("/proc/self/fd")),
                tcp=len(service.service.protocols),
            )

        return service.call(count)


def assert_no_leaks(
    service: ServiceThread, baseline: Census, timeout: float = TIMEOUT, *, fds: bool = True
) -> None:
    """Wait until the service is back to ``baseline`` (closing is asynchronous); fail with
    the difference when it does not get there in ``timeout`` seconds.

    ``fds=False`` skips descriptors: for services whose event-handler client keeps a pool
    of connections open.
    """
    deadline = time.monotonic() + timeout
    while True:
        now = Census.take(service)
        # Descriptors are counted for the whole test process, where other tests' sockets
        # may still be closing: fewer than before is fine, more is a leak.
        allowed = min(now.fds, baseline.fds) if fds else now.fds
        if now == dataclasses.replace(baseline, fds=allowed):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"leak: {now} after, {baseline} before")
        time.sleep(0.01)


# -- raw WebSocket ------------------------------------------------------------------------


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    length: int | None = None,
    length_size: int | None = None,
) -> bytes:
    """A client frame (RFC 6455 5.2) with any field, legal or not.

    Args:
        length: the announced payload length (default: the real one).
        length_size: force the 7-bit (0), 16-bit (2) or 64-bit (8) length encoding.
    """
    announced = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv & 0x7) << 4 | (opcode & 0xF)
    size = length_size
    if size is None:
        size = 0 if announced < 126 else 2 if announced < 65536 else 8
    mask_bit = 0x80 if mask else 0
    if size == 0:
        head = bytes((first, mask_bit | announced))
    elif size == 2:
        head = bytes((first, mask_bit | 126)) + struct.pack("!H", announced)
    else:
        head = bytes((first, mask_bit | 127)) + struct.pack("!Q", announced)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


@dataclasses.dataclass
class Frame:
    """A frame received from the service."""

    fin: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != CLOSE:
            return None
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else 1005


class RawWebSocket:
    """A blocking WebSocket client that completes a real handshake, then sends raw bytes."""

    def __init__(
        self,
        service: ServiceThread,
        hub: str,
        *,
        subprotocol: str | None = None,
        roles: Iterable[str] = (),
        user_id: str | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        token = client_token(service, hub, roles=roles, user_id=user_id)
        self.sock = socket.create_connection(
            (service.settings.host, service.settings.port), timeout=timeout
        )
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET /client/hubs/{hub}?access_token={token} HTTP/1.1",
            f"Host: 127.0.0.1:{service.settings.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if subprotocol:
            lines.append(f"Sec-WebSocket-Protocol: {subprotocol}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self._buffer = b""
        self.eof = False
        head = self.read_head()
        status = head.split(b"\r\n", 1)[0]
        assert b" 101 " in status, head

    @classmethod
    def adopt(cls, sock: socket.socket) -> RawWebSocket:
        """Wrap a socket whose handshake the caller sent (:meth:`read_head` reads the answer)."""
        ws = cls.__new__(cls)
        ws.sock = sock
        ws._buffer = b""
        ws.eof = False
        return ws

    def read_head(self) -> bytes:
        """The service's HTTP answer to the handshake, up to the blank line."""
        return self._read_until(b"\r\n\r\n")

    def buffered(self) -> bytes:
        """What was read and not taken yet."""
        return self._buffer

    def __enter__(self) -> RawWebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        """Send bytes; a reset by a service that already closed is not an error."""
        with suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(data)

    def send_message(self, payload: bytes, *, text: bool = True) -> None:
        self.send(frame(TEXT if text else BINARY, payload))

    def shutdown(self) -> None:
        """Half-close: the service reads EOF after whatever was sent."""
        with suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def fill(self) -> bool:
        """Read once more from the socket; False at EOF."""
        return self._fill()

    def _fill(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self._buffer += data
        return True

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            if not self._fill():
                raise AssertionError(f"connection closed before {marker!r}: {self._buffer!r}")
        head, _, self._buffer = self._buffer.partition(marker)
        return head

    def _take(self, n: int) -> bytes | None:
        while len(self._buffer) < n:
            if not self._fill():
                return None
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def receive(self) -> Frame | None:
        """The next frame from the service, or None at EOF. Server frames are unmasked."""
        head = self._take(2)
        if head is None:
            return None
        length = head[1] & 0x7F
        assert not head[1] & 0x80, "the service masked a frame"
        if length == 126:
            raw = self._take(2)
            assert raw is not None
            length = struct.unpack("!H", raw)[0]
        elif length == 127:
            raw = self._take(8)
            assert raw is not None
            length = struct.unpack("!Q", raw)[0]
        payload = self._take(length)
        assert payload is not None, "EOF inside a frame"
        return Frame(bool(head[0] & 0x80), head[0] & 0x0F, payload)

    def until_closed(self) -> tuple[int | None, list[Frame]]:
        """Read to EOF, answering the service's close frame as RFC 6455 5.5.1 asks:
        (the service's close code or None, every frame before it)."""
        frames: list[Frame] = []
        code = None
        while (received := self.receive()) is not None:
            if received.opcode == CLOSE:
                if code is None:
                    self.send(frame(CLOSE, received.payload[:2]))
                code = received.close_code
            else:
                frames.append(received)
        return code, frames

    def next_data(self) -> Frame | None:
        """The next data frame (pongs to our pings skipped), or None when closed."""
        while (received := self.receive()) is not None:
            if received.opcode in (TEXT, BINARY, CLOSE):
                return received
        return None
