"""Which app server gets a connection's events: the tunnels of each hub (socketio spec 4.6).

An app-server process is one ``sub`` (the GUID its tunnel token names) with one or more tunnel
sockets. A new connection goes to one sub, round robin over the subs that have a live tunnel,
and stays pinned to it: its engine.io socket lives in that process's memory. While a sub has
no live tunnel (its socket dropped, the SDK reconnects within seconds) its connections wait for
``grace`` seconds; a tunnel of the same sub coming back takes them over, and past the grace
period they are to be closed.

Pure: no sockets, no clock (time is passed in). ``T`` is whatever the edge uses for a tunnel.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .events import EventHandlerSettings, EventKind, UpstreamRejected

T = TypeVar("T", bound=Hashable)

DEFAULT_GRACE = 30.0  # seconds a sub's connections wait for its tunnel to come back [I]


class RouteKind(enum.Enum):
    LIVE = "live"  # send on ``tunnel``
    WAIT = "wait"  # the owner's tunnel is down: wait until ``deadline`` for it to come back
    GONE = "gone"  # no app server can take it (never had one, or the grace period is over)


@dataclass(frozen=True, slots=True)
class Route(Generic[T]):
    kind: RouteKind
    sub: str | None = None
    tunnel: T | None = None
    deadline: float = 0.0


@dataclass
class _Sub(Generic[T]):
    tunnels: list[T] = field(default_factory=list)
    next: int = 0  # round robin over the sub's sockets
    down_since: float | None = None  # when its last tunnel went, while it has none
    connections: set[str] = field(default_factory=set)


@dataclass
class _HubTunnels(Generic[T]):
    subs: dict[str, _Sub[T]] = field(default_factory=dict)
    next: int = 0  # round robin over subs for new connections


class TunnelRegistry(Generic[T]):
    """The tunnels and the connection → sub pins of every hub (hub names case-insensitive)."""

    def __init__(self, grace: float = DEFAULT_GRACE) -> None:
        self.grace = grace
        self._hubs: dict[str, _HubTunnels[T]] = {}
        self._pins: dict[tuple[str, str], str] = {}  # (hub, connection id) -> sub
        # Connections that belong to their app server whole (Socket.IO clients): every event
        # goes to it, whatever handlers the hub has. Others are pinned only for the events
        # of handlers with tunnel:/// URLs.
        self._owned: set[tuple[str, str]] = set()

    # -- tunnels ----------------------------------------------------------------------------

    def add(self, hub: str, sub: str, tunnel: T) -> None:
        """A tunnel socket of ``sub`` is up: it serves the sub's pinned connections at once."""
        entry = self._hubs.setdefault(hub.lower(), _HubTunnels()).subs.setdefault(sub, _Sub())
        entry.tunnels.append(tunnel)
        entry.down_since = None

    def remove(self, hub: str, sub: str, tunnel: T, now: float) -> None:
        """A tunnel socket is gone; its sub's connections wait if it was the last one."""
        hub_tunnels = self._hubs.get(hub.lower())
        entry = hub_tunnels.subs.get(sub) if hub_tunnels is not None else None
        if hub_tunnels is None or entry is None or tunnel not in entry.tunnels:
            return
        entry.tunnels.remove(tunnel)
        if entry.tunnels:
            return
        if entry.connections:
            entry.down_since = now
        else:
            del hub_tunnels.subs[sub]
            if not hub_tunnels.subs:
                del self._hubs[hub.lower()]

    def has_tunnel(self, hub: str) -> bool:
        """Whether a new connection of ``hub`` has an app server to go to."""
        hub_tunnels = self._hubs.get(hub.lower())
        return hub_tunnels is not None and any(s.tunnels for s in hub_tunnels.subs.values())

    def tunnels(self, hub: str) -> list[T]:
        hub_tunnels = self._hubs.get(hub.lower())
        if hub_tunnels is None:
            return []
        return [t for s in hub_tunnels.subs.values() for t in s.tunnels]

    # -- connections --------------------------------------------------------------------------

    def route(self, hub: str, connection_id: str, now: float, *, own: bool = False) -> Route[T]:
        """Where an event of this connection goes; an unpinned one is pinned to the next sub
        (``own``: the connection belongs to it whole, see :meth:`owned`)."""
        key = (hub.lower(), connection_id)
        hub_tunnels = self._hubs.get(key[0])
        sub = self._pins.get(key)
        if sub is None:
            route = self._pin_new(key, hub_tunnels)
            if own and route.kind is RouteKind.LIVE:
                self._owned.add(key)
            return route
        entry = hub_tunnels.subs.get(sub) if hub_tunnels is not None else None
        if entry is None:
            return Route(RouteKind.GONE, sub)
        if entry.tunnels:
            return Route(RouteKind.LIVE, sub, self._next_tunnel(entry))
        assert entry.down_since is not None
        deadline = entry.down_since + self.grace
        if now >= deadline:
            return Route(RouteKind.GONE, sub)
        return Route(RouteKind.WAIT, sub, deadline=deadline)

    def _pin_new(self, key: tuple[str, str], hub_tunnels: _HubTunnels[T] | None) -> Route[T]:
        if hub_tunnels is None:
            return Route(RouteKind.GONE)
        live = [(sub, entry) for sub, entry in hub_tunnels.subs.items() if entry.tunnels]
        if not live:
            return Route(RouteKind.GONE)
        sub, entry = live[hub_tunnels.next % len(live)]
        hub_tunnels.next = (hub_tunnels.next + 1) % len(live)
        self._pins[key] = sub
        entry.connections.add(key[1])
        return Route(RouteKind.LIVE, sub, self._next_tunnel(entry))

    @staticmethod
    def _next_tunnel(entry: _Sub[T]) -> T:
        tunnel = entry.tunnels[entry.next % len(entry.tunnels)]
        entry.next = (entry.next + 1) % len(entry.tunnels)
        return tunnel

    def pinned(self, hub: str, connection_id: str) -> str | None:
        """The sub a connection is pinned to, or None."""
        return self._pins.get((hub.lower(), connection_id))

    def owned(self, hub: str, connection_id: str) -> bool:
        """Whether every event of the connection goes to its app server (Socket.IO)."""
        return (hub.lower(), connection_id) in self._owned

    def unpin(self, hub: str, connection_id: str) -> None:
        """The connection is over (its ``disconnected`` was sent, or its connect failed)."""
        key = (hub.lower(), connection_id)
        self._owned.discard(key)
        sub = self._pins.pop(key, None)
        hub_tunnels = self._hubs.get(key[0])
        if sub is None or hub_tunnels is None:
            return
        entry = hub_tunnels.subs.get(sub)
        if entry is None:
            return
        entry.connections.discard(connection_id)
        if not entry.tunnels and not entry.connections:
            del hub_tunnels.subs[sub]
            if not hub_tunnels.subs:
                del self._hubs[key[0]]

    def tunnel_of(self, hub: str, sub: str) -> T | None:
        """A live tunnel of one app server (the sockets take turns), or None."""
        hub_tunnels = self._hubs.get(hub.lower())
        entry = hub_tunnels.subs.get(sub) if hub_tunnels is not None else None
        if entry is None or not entry.tunnels:
            return None
        return self._next_tunnel(entry)

    def live_subs(self) -> dict[str, list[str]]:
        """Hub -> the app servers with a live tunnel here (what the other nodes are told)."""
        live: dict[str, list[str]] = {}
        for hub, hub_tunnels in self._hubs.items():
            subs = sorted(sub for sub, entry in hub_tunnels.subs.items() if entry.tunnels)
            if subs:
                live[hub] = subs
        return live

    def pins(self) -> list[tuple[str, str]]:
        """Every pinned (hub, connection id); hub in lower case."""
        return list(self._pins)

    def expire(self, now: float) -> list[tuple[str, str]]:
        """The (hub, connection id) pairs whose sub stayed without a tunnel past the grace
        period: they are unpinned here, and are to be closed."""
        gone: list[tuple[str, str]] = []
        for hub, hub_tunnels in list(self._hubs.items()):
            for sub, entry in list(hub_tunnels.subs.items()):
                if entry.tunnels or entry.down_since is None:
                    continue
                if now < entry.down_since + self.grace:
                    continue
                for connection_id in entry.connections:
                    self._pins.pop((hub, connection_id), None)
                    self._owned.discard((hub, connection_id))
                    gone.append((hub, connection_id))
                del hub_tunnels.subs[sub]
            if not hub_tunnels.subs:
                del self._hubs[hub]
        return gone


class RemotePins:
    """Connections of this node pinned to app servers whose tunnels are on other nodes of a
    cluster (the tunnel of a process lands on one node; its clients, on any).

    Like :class:`TunnelRegistry`'s pins, but the sub's node is looked up at each call (it
    moves when the app server reconnects elsewhere), and the grace period runs from the
    first call that found the sub nowhere.
    """

    def __init__(self, grace: float = DEFAULT_GRACE) -> None:
        self.grace = grace
        self._subs: dict[tuple[str, str], str] = {}
        self._owned: set[tuple[str, str]] = set()
        self._missing_since: dict[tuple[str, str], float] = {}
        self._turn = 0

    def sub(self, hub: str, connection_id: str) -> str | None:
        return self._subs.get((hub.lower(), connection_id))

    def pin(self, hub: str, connection_id: str, subs: list[str], *, own: bool) -> str | None:
        """Pin a new connection to one of ``subs`` (round robin); None if there is none."""
        if not subs:
            return None
        key = (hub.lower(), connection_id)
        sub = sorted(subs)[self._turn % len(subs)]
        self._turn += 1
        self._subs[key] = sub
        if own:
            self._owned.add(key)
        return sub

    def owned(self, hub: str, connection_id: str) -> bool:
        return (hub.lower(), connection_id) in self._owned

    def found(self, hub: str, connection_id: str) -> None:
        """The connection's app server answered: any grace period is over."""
        self._missing_since.pop((hub.lower(), connection_id), None)

    def missing(self, hub: str, connection_id: str, now: float) -> float:
        """Its app server is nowhere now: the deadline to wait for it (then unpin)."""
        since = self._missing_since.setdefault((hub.lower(), connection_id), now)
        return since + self.grace

    def unpin(self, hub: str, connection_id: str) -> None:
        key = (hub.lower(), connection_id)
        self._subs.pop(key, None)
        self._owned.discard(key)
        self._missing_since.pop(key, None)

    def pins(self) -> list[tuple[str, str]]:
        return list(self._subs)


# The handler of a Socket.IO connection: its app server, over the tunnel, on the path the
# SDK's express handler listens on (socketio spec 4.3). ``connected`` is not sent: the SDK
# has no use for it.
TUNNEL_HANDLER = EventHandlerSettings(
    "tunnel:///eventhandler/", "*", (EventKind.CONNECT.value, EventKind.DISCONNECTED.value)
)


def socketio_open(status: int, content: bytes) -> dict[str, Any]:
    """The Engine.IO open packet's object from the app server's ``connect`` answer
    (socketio spec 3 step 2, 4.3): ``200 {"socketio": {"sid": ..., ...}}``.

    Raises UpstreamRejected with the status for the client: the app server's own 4xx/5xx
    (400 "EIO server refused connection with error: ..."), 500 for any other answer.
    """
    if status >= 400:
        text = content.decode("utf-8", "replace").strip()[:500]
        raise UpstreamRejected(status, text or f"The app server answered {status}.")
    if status != 200:
        raise UpstreamRejected(500, f"The app server answered connect with {status}.")
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        raise UpstreamRejected(500, "The app server's connect answer is not JSON.") from None
    packet = body.get("socketio") if isinstance(body, dict) else None
    if not isinstance(packet, dict) or not isinstance(packet.get("sid"), str):
        raise UpstreamRejected(500, "The app server's connect answer has no socketio.sid.")
    return packet
