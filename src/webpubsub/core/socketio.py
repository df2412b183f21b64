"""The part of Socket.IO the service understands (socketio spec 5), pure.

A Socket.IO client's Engine.IO ``message`` packets carry Socket.IO packets
(``<type>[<attachments>-][/<nsp>,][<ackId>][<JSON>]``); the service only peeks at their type
and namespace, and keeps, per connection, the socket id the app server gave it in each
namespace: rooms and namespaces are groups ``0~b64u(nsp)~[b64u(room)]`` (spec 1), and the
namespace's group is the service's to join (spec 3 step 3) and to leave (spec 5.1, 5.4).
Everything else is relayed as it came.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from enum import Enum

CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)


def b64u(text: str) -> str:
    """base64url of the UTF-8 text, without padding (the adapter's ``base64url``)."""
    return base64.urlsafe_b64encode(text.encode("utf-8")).rstrip(b"=").decode("ascii")


def namespace_group(nsp: str) -> str:
    return f"0~{b64u(nsp)}~"


def room_group(nsp: str, room: str) -> str:
    return namespace_group(nsp) + b64u(room)


@dataclass(frozen=True, slots=True)
class Peeked:
    """A Socket.IO packet's header: type, namespace, and what follows the namespace."""

    kind: int
    nsp: str
    rest: str  # the ack id and JSON data, as sent
    prefix: str  # type, attachment count and namespace: what a re-sent packet starts with


def peek(packet: str) -> Peeked | None:
    """The Socket.IO header of an Engine.IO ``message`` packet (``4...``); None for any
    other packet, a binary attachment, or a message that is not Socket.IO."""
    if len(packet) < 2 or packet[0] != "4" or not packet[1].isdigit():
        return None
    kind = int(packet[1])
    if kind > BINARY_ACK:
        return None
    i = 2
    if kind in (BINARY_EVENT, BINARY_ACK):
        dash = packet.find("-", i)
        if dash < 0 or not packet[i:dash].isdigit():
            return None
        i = dash + 1
    nsp = "/"
    if packet[i : i + 1] == "/":
        comma = packet.find(",", i)
        end = comma if comma >= 0 else len(packet)
        nsp = packet[i:end]
        i = end + 1 if comma >= 0 else end
    return Peeked(kind, nsp, packet[i:], packet[:i])


# Ack ids the service puts in a broadcast with acknowledgements (``:invoke``, spec 4.5):
# the app server's own per-socket ids count from 0, these from 10^9, so they never meet.
INVOKE_ACK_BASE = 1_000_000_000


def with_ack_id(packet: str, ack_id: int) -> str | None:
    """An EVENT or BINARY_EVENT packet with ``ack_id`` after its prefix (``42["e"]`` ->
    ``421000000000["e"]``); None for any other packet, or one that has an id already."""
    head = peek(packet)
    if head is None or head.kind not in (EVENT, BINARY_EVENT) or head.rest[:1].isdigit():
        return None
    return f"{head.prefix}{ack_id}{head.rest}"


def ack_of(packet: str) -> tuple[int, int] | None:
    """(ack id, binary attachments that follow) of an ACK or BINARY_ACK packet."""
    head = peek(packet)
    if head is None or head.kind not in (ACK, BINARY_ACK):
        return None
    digits = 0
    while digits < len(head.rest) and head.rest[digits].isdigit():
        digits += 1
    if not digits or digits > 18:
        return None
    attachments = int(head.prefix[2 : head.prefix.index("-")]) if head.kind == BINARY_ACK else 0
    return int(head.rest[:digits]), attachments


def disconnect_packet(nsp: str) -> str:
    """``41[/nsp,]`` without data (socket.io-parser refuses a DISCONNECT with data)."""
    return "41" if nsp == "/" else f"41{nsp},"


class Do(Enum):
    RELAY = "relay"  # send the packet to the client
    DROP = "drop"  # not for this connection's current socket
    CLOSE = "close"  # the whole Engine.IO connection ends after what precedes


@dataclass(frozen=True, slots=True)
class Decision:
    do: Do
    packet: str = ""  # what to relay (may differ from what came)
    join: str | None = None  # a group to join
    leave_namespace: str | None = None  # leave every group of this namespace
    upstream: str | None = None  # a packet to send the app server as if the client had
    close_after: bool = False


def stateless(packet: str) -> bool:
    """Whether :meth:`SocketIOState.from_server` relays ``packet`` as it is to every
    connection, whatever its namespaces: all but CONNECT, DISCONNECT and the close packet.
    A broadcast made only of such packets is serialized once for all its recipients."""
    if packet == "1":
        return False
    head = peek(packet)
    return head is None or head.kind not in (CONNECT, DISCONNECT)


@dataclass
class SocketIOState:
    """One connection's namespaces: namespace -> the socket id the app server gave it."""

    sockets: dict[str, str] = field(default_factory=dict)

    def from_server(self, packet: str, group: str | None) -> Decision:
        """A packet the app server sent (``group``: the group it was sent to, if any)."""
        if packet == "1":
            return Decision(Do.CLOSE)
        head = peek(packet)
        if head is None:
            return Decision(Do.RELAY, packet)
        if head.kind == CONNECT:
            sid = _sid(head.rest)
            if sid is None:
                return Decision(Do.RELAY, packet)
            self.sockets[head.nsp] = sid
            return Decision(Do.RELAY, packet, join=namespace_group(head.nsp))
        if head.kind != DISCONNECT:
            return Decision(Do.RELAY, packet)
        nsp = head.nsp
        close = _close_flag(head.rest)
        if close is not None:
            # io.disconnectSockets(close) (spec 5.4, third shape): only where it applies.
            if nsp not in self.sockets:
                return Decision(Do.DROP)
            del self.sockets[nsp]
            return Decision(
                Do.RELAY,
                disconnect_packet(nsp),
                leave_namespace=nsp,
                upstream=None if close else disconnect_packet(nsp),
                close_after=close,
            )
        if group is not None:
            # The adapter's delAll through the socket's private room (second shape): only
            # for the socket that is still this connection's in that namespace.
            current = self.sockets.get(nsp)
            if current is None or group != room_group(nsp, current):
                return Decision(Do.DROP)
        self.sockets.pop(nsp, None)
        return Decision(Do.RELAY, packet, leave_namespace=nsp)

    def from_client(self, packet: str) -> str | None:
        """A client packet going upstream: the namespace it leaves, if it is a DISCONNECT."""
        head = peek(packet)
        if head is None or head.kind != DISCONNECT:
            return None
        self.sockets.pop(head.nsp, None)
        return head.nsp


def _sid(rest: str) -> str | None:
    try:
        data = json.loads(rest) if rest else None
    except ValueError:
        return None
    sid = data.get("sid") if isinstance(data, dict) else None
    return sid if isinstance(sid, str) else None


def _close_flag(rest: str) -> bool | None:
    if not rest:
        return None
    try:
        data = json.loads(rest)
    except ValueError:
        return None
    close = data.get("close") if isinstance(data, dict) else None
    return close if isinstance(close, bool) else None
