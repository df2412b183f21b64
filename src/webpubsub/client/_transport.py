"""The client's seam to the network: one WebSocket, and nothing of ``websockets`` beyond it.

:func:`connect` opens a socket with ``websockets``' asyncio client; :class:`WebSocket` moves
frame payloads. Every ``websockets`` exception is translated here: a failed handshake or
network error becomes :class:`~webpubsub.client.ConnectError`, a closed connection becomes
:class:`SocketClosed` carrying the close code (1006 when the TCP connection dropped).
"""

from __future__ import annotations

import logging
import platform
from typing import Protocol

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)
from websockets.typing import Subprotocol

from .. import __version__
from ._errors import ConnectError

ws_log = logging.getLogger("webpubsub.client.websocket")

ABNORMAL_CLOSURE = 1006
USER_AGENT = f"webpubsub-client/{__version__} Python/{platform.python_version()}"


class SocketClosed(Exception):
    """The WebSocket is closed; ``code`` is 1006 when no close frame came."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed with {code} {reason}".strip())
        self.code = code
        self.reason = reason


class Socket(Protocol):
    """What the client needs of a WebSocket."""

    async def send(self, payload: bytes, *, text: bool) -> None:
        """Send one message (raises SocketClosed)."""

    async def recv(self) -> bytes | str:
        """The next message: str for a text frame, bytes for a binary one (raises
        SocketClosed)."""
        ...

    async def close(self) -> None:
        """Close with 1000 and wait for the closing handshake (bounded)."""

    def abort(self) -> None:
        """Drop the TCP connection at once, without a closing handshake."""


class WebSocket:
    """A :class:`Socket` over a ``websockets`` client connection."""

    def __init__(self, connection: ClientConnection) -> None:
        self._connection = connection

    async def send(self, payload: bytes, *, text: bool) -> None:
        try:
            await self._connection.send(payload, text=text)
        except ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def recv(self) -> bytes | str:
        try:
            return await self._connection.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from exc

    async def close(self) -> None:
        await self._connection.close()

    def abort(self) -> None:
        self._connection.transport.abort()


def _closed(exc: ConnectionClosed) -> SocketClosed:
    if exc.rcvd is not None:
        return SocketClosed(exc.rcvd.code, exc.rcvd.reason)
    return SocketClosed(ABNORMAL_CLOSURE, "")


async def connect(
    url: str, subprotocol: str, *, open_timeout: float | None, max_size: int | None
) -> WebSocket:
    """Open a WebSocket to ``url`` offering exactly ``subprotocol`` (spec 4.1).

    Raises:
        ConnectError: the handshake was refused (``status_code``), the service did not
            select the subprotocol, or the network failed.
    """
    try:
        connection = await ws_connect(
            url,
            subprotocols=[Subprotocol(subprotocol)],
            # Our keep-alive is the protocol's own ping (spec 4.9); the service declines
            # compression (its frames are serialized once for every recipient).
            ping_interval=None,
            compression=None,
            open_timeout=open_timeout,
            max_size=max_size,
            user_agent_header=USER_AGENT,
            logger=ws_log,
        )
    except InvalidStatus as exc:
        response = exc.response
        detail = (response.body or b"").decode("utf-8", "replace").strip()[:300]
        message = f"The service refused the connection: {response.status_code}"
        raise ConnectError(f"{message} {detail}".strip(), status_code=response.status_code) from exc
    except InvalidURI as exc:
        raise ConnectError(f"Invalid client access URL: {exc}") from exc
    except (WebSocketException, OSError, TimeoutError) as exc:
        raise ConnectError(f"Could not connect: {exc or type(exc).__name__}") from exc
    if connection.subprotocol != subprotocol:
        await connection.close()
        raise ConnectError(f"The service did not select the subprotocol {subprotocol}.")
    return WebSocket(connection)
