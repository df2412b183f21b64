"""A client core and a server node joined by a fake link: round trips with no socket and no
clock (h11's ``ConnectionPair``, for our client).

:class:`Pair` drives a :class:`~webpubsub.client.ClientCore` against the service's real
:class:`~webpubsub.core.node.Node`: client payloads go to ``Node.receive``, the frames the
node writes go back to ``ClientCore.receive``. A drop is ``Node.connection_lost`` on one
side and ``socket_closed(1006)`` on the other; reconnecting follows the client's own
``next_attempt``, so a recovery URL goes to ``Node.resume`` exactly as the server edge does.
Time only moves with :meth:`Pair.advance`.
"""

from __future__ import annotations

import struct
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

from webpubsub.client import ClientCore, ClientOptions
from webpubsub.client._core import Event
from webpubsub.core import commands as c
from webpubsub.core.connection import Connection
from webpubsub.core.message import DataType, Message
from webpubsub.core.node import Node, RecoveryRefused
from webpubsub.protocols import CODECS

HUB = "chat"
URL = "ws://service.test/client/hubs/chat?access_token=t0"
ALL_ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")


class FakeSocket:
    """The server's side of one socket: records the frames the node writes, and the close."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.close_frame: tuple[int, str] | None = None

    # Transport of webpubsub.core.connection
    def send(self, frame: bytes) -> None:
        self.buffer += frame

    def send_expiring(self, pieces: tuple[bytes, ...], expires: float) -> None:
        if time.time() < expires:
            self.buffer += b"".join(pieces)

    def close(self, code: int, reason: str) -> None:
        self.close_frame = (code, reason)

    def messages(self) -> list[bytes | str]:
        """Complete frames written so far, as a websockets client would return them."""
        out: list[bytes | str] = []
        data = self.buffer
        while len(data) >= 2:
            opcode, length, offset = data[0] & 0x0F, data[1] & 0x7F, 2
            if length == 126:
                (length,) = struct.unpack_from("!H", data, 2)
                offset = 4
            elif length == 127:
                (length,) = struct.unpack_from("!Q", data, 2)
                offset = 10
            if len(data) < offset + length:
                break
            payload = bytes(data[offset : offset + length])
            del data[: offset + length]
            out.append(payload.decode("utf-8") if opcode == 0x1 else payload)
        return out


class Pair:
    """One client and the node it talks to."""

    def __init__(
        self,
        protocol: str = "json.reliable.webpubsub.azure.v1",
        *,
        roles: tuple[str, ...] = ALL_ROLES,
        user_id: str | None = "alice",
        node: Node | None = None,
        **options: Any,
    ) -> None:
        options.setdefault("keep_alive_interval", 0)
        options.setdefault("keep_alive_timeout", 0)
        self.client = ClientCore(ClientOptions(protocol=protocol, **options), rand=lambda: 0.0)
        self.node = node or Node()
        self.roles = roles
        self.user_id = user_id
        self.now = 100.0
        self.socket: FakeSocket | None = None
        self.conn: Connection | None = None
        self.events: list[Event] = []
        self.sent: list[bytes] = []  # every payload the client wrote, in order
        self.refuse_connections = False

    # -- driving ------------------------------------------------------------------------------

    def start(self) -> None:
        """start() and open the first connection."""
        self.client.start()
        self.connect()

    def connect(self) -> None:
        """Make the client's next attempt (ignoring its delay) and serve it."""
        attempt = self.client.next_attempt(self.now)
        self.collect()
        assert attempt is not None, "the client is stopped"
        url = attempt.url or URL
        if self.refuse_connections:
            from webpubsub.client import ConnectError

            self.client.attempt_failed(ConnectError("refused"), self.now)
            self.collect()
            return
        socket = FakeSocket()
        query = parse_qs(urlsplit(url).query)
        if "awps_connection_id" in query:
            self.socket = socket
            self.client.socket_opened(url, self.now)
            try:
                self.conn = self.node.resume(
                    HUB,
                    query["awps_connection_id"][0],
                    query["awps_reconnection_token"][0],
                    socket,
                    self.now,
                )
            except RecoveryRefused as exc:
                self.socket = None
                self.client.socket_closed(1008, str(exc), self.now)
                self.collect()
                return
        else:
            codec = CODECS[self.client.codec.subprotocol or ""]
            self.conn = Connection(HUB, codec, socket, user_id=self.user_id, roles=self.roles)
            self.socket = socket
            self.client.socket_opened(url, self.now)
            self.node.connect(self.conn)
        self.pump()

    def pump(self) -> None:
        """Carry bytes both ways until both sides are quiet."""
        while True:
            moved = False
            for payload in self.client.data_to_send():
                self.sent.append(payload)
                if self.conn is not None and self.socket is not None:
                    self.node.receive(self.conn, payload, self.client.codec.text_frames)
                moved = True
            if self.socket is not None:
                for message in self.socket.messages():
                    self.client.receive(message, self.now)
                    moved = True
                if self.socket.close_frame is not None:
                    code, reason = self.socket.close_frame
                    self.socket = None
                    self.client.socket_closed(code, reason, self.now)
                    moved = True
            self.collect()
            if not moved:
                return

    def collect(self) -> list[Event]:
        events = self.client.events_received()
        self.events.extend(events)
        return events

    def drop(self) -> None:
        """The TCP connection dies: both sides notice, nothing more is delivered."""
        assert self.socket is not None and self.conn is not None
        socket, self.socket = self.socket, None
        self.node.connection_lost(self.conn, socket, self.now)
        self.client.socket_closed(1006, "", self.now)
        self.collect()

    def advance(self, seconds: float) -> None:
        """Let time pass: timers of the client, expiry on the node."""
        self.now += seconds
        self.client.handle_timer(self.now)
        self.node.expire(self.now)
        self.pump()

    # -- the server side ----------------------------------------------------------------------

    def publish(self, group: str, data: bytes, data_type: DataType = DataType.TEXT) -> None:
        """A REST send to a group (what another client or the app server would cause)."""
        self.node.execute(HUB, c.Send(c.ToGroup(group), Message(data, data_type)))
        self.pump()

    def server_groups(self) -> set[str]:
        assert self.conn is not None
        return set(self.conn.groups)

    def take(self, kind: type[Any]) -> list[Any]:
        """Remove and return the collected events of one type."""
        taken = [e for e in self.events if isinstance(e, kind)]
        self.events = [e for e in self.events if not isinstance(e, kind)]
        return taken
