"""The hub: registry of one hub's local connections, users and groups, and local fan-out.

No sockets and no event loop: connections write through their ``Transport``. Groups are
attached to connections, not users (spec 0): adding a user adds its current connections.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple, Protocol

from . import commands as c
from .connection import CloseCode, Codec, Connection
from .message import Message, Source
from .odata import Filter
from .roles import revoke, role_for

BUFFER_FULL = "The reliable message buffer of the connection is full."

# Called with (connection, group, joined) when a membership really changes (spec-next 6).
PresenceHook = Callable[[Connection, str, bool], None]


class Applied(NamedTuple):
    """What a command did here: the connections it touched, and those it closed.

    A broadcast handed to the ``Batcher`` lists no targets, only how many there were."""

    targets: list[Connection]
    closed: list[Connection]
    reached: int = -1  # how many, when ``targets`` is not listed

    @property
    def recipients(self) -> int:
        return self.reached if self.reached >= 0 else len(self.targets)


class Batcher(Protocol):
    """Where a hub's broadcasts go to be written once per event-loop turn (the edge's
    ``Flusher``): ``frames`` holds one frame per codec of the hub's plain connections, and
    every plain connection the hub had at ``hub.version`` gets its codec's frame, in order
    with the frames it is sent on its own (issue 16: append once per message, not once per
    connection)."""

    def broadcast(self, hub: Hub, frames: dict[Codec, bytes]) -> None: ...


# Hub versions, unique across hubs: a connection added at version v is a member of every
# broadcast batch taken at a version >= v of its hub.
_versions = itertools.count(1)


def is_plain(conn: Connection) -> bool:
    """Whether a broadcast to ``conn`` is just its codec's shared frame (not reliable, not
    encoded per message)."""
    return conn.recovery is None and not conn.per_message


class Hub:
    """Connections of one hub on this node, indexed by id, user and group."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.connections: dict[str, Connection] = {}
        self.users: dict[str, dict[str, Connection]] = {}
        self.groups: dict[str, dict[str, Connection]] = {}
        self.presence: PresenceHook | None = None  # joined/left announcements, if wanted
        # Broadcasts to the whole hub (no exclusion, no filter, no TTL) go to the batcher, if
        # any; the connections it cannot take (reliable, MQTT) are delivered one by one.
        self.batcher: Batcher | None = None
        self.version = next(_versions)  # changes whenever a connection comes or goes
        self.special: dict[str, Connection] = {}
        self.plain_codecs: dict[Codec, int] = {}  # codec -> plain connections using it

    # -- registry -------------------------------------------------------------------------

    def add(self, conn: Connection) -> None:
        self.connections[conn.connection_id] = conn
        self.version = conn.added_at = next(_versions)
        if is_plain(conn):
            self.plain_codecs[conn.codec] = self.plain_codecs.get(conn.codec, 0) + 1
        else:
            self.special[conn.connection_id] = conn
        if conn.user_id is not None:
            self.users.setdefault(conn.user_id, {})[conn.connection_id] = conn

    def remove(self, conn: Connection, *, announce: bool = True) -> bool:
        """Forget a connection and its memberships; False when it was not here.

        ``announce`` False: no ``left`` events (the connection moves to another node)."""
        if self.connections.pop(conn.connection_id, None) is None:
            return False
        self.version = next(_versions)
        if self.special.pop(conn.connection_id, None) is None:
            left = self.plain_codecs.get(conn.codec, 0) - 1
            if left > 0:
                self.plain_codecs[conn.codec] = left
            else:
                self.plain_codecs.pop(conn.codec, None)
        presence = self.presence if announce else None
        for group in conn.groups:
            self._drop_member(group, conn)
            if presence is not None:
                presence(conn, group, False)
        conn.groups.clear()
        if conn.user_id is not None:
            user = self.users.get(conn.user_id)
            if user is not None:
                user.pop(conn.connection_id, None)
                if not user:
                    del self.users[conn.user_id]
        return True

    def join(self, conn: Connection, group: str, *, announce: bool = True) -> None:
        """Add a member; ``announce`` False for initial groups (announced after connected)."""
        if group in conn.groups:
            return
        conn.groups.add(group)
        self.groups.setdefault(group, {})[conn.connection_id] = conn
        if announce and self.presence is not None:
            self.presence(conn, group, True)

    def leave(self, conn: Connection, group: str) -> None:
        if group not in conn.groups:
            return
        conn.groups.discard(group)
        self._drop_member(group, conn)
        if self.presence is not None:
            self.presence(conn, group, False)

    def _drop_member(self, group: str, conn: Connection) -> None:
        members = self.groups.get(group)
        if members is not None:
            members.pop(conn.connection_id, None)
            if not members:
                del self.groups[group]

    # -- queries ----------------------------------------------------------------------------

    def group_members(self, group: str) -> list[Connection]:
        return list(self.groups.get(group, {}).values())

    def select(
        self,
        target: c.Target,
        excluded: frozenset[str] = frozenset(),
        filter: Filter | None = None,
    ) -> list[Connection]:
        """The local connections a target names, minus ``excluded``, where ``filter`` holds.

        A snapshot (a list): commands may change membership while they walk it.
        """
        conns: Iterable[Connection]
        match target:
            case c.ToAll() if filter is not None and filter.in_group is not None:
                conns = self.groups.get(filter.in_group, {}).values()
                filter = None  # walking its group is the test
            case c.ToAll() if filter is not None and filter.connection_id is not None:
                found = self.connections.get(filter.connection_id)
                conns = (found,) if found is not None else ()
                filter = None  # so is looking the connection up
            case c.ToAll():
                conns = self.connections.values()
            case c.ToGroup(group):
                conns = self.groups.get(group, {}).values()
            case c.ToUser(user_id):
                conns = self.users.get(user_id, {}).values()
            case c.ToConnection(connection_id):
                found = self.connections.get(connection_id)
                conns = (found,) if found is not None else ()
        if not excluded and filter is None:
            return list(conns)  # the common broadcast: no per-connection test at all
        return [
            conn
            for conn in conns
            if conn.connection_id not in excluded and (filter is None or filter.matches(conn))
        ]

    # -- fan-out --------------------------------------------------------------------------

    def deliver(self, message: Message, conns: Iterable[Connection]) -> list[Connection]:
        """Queue ``message`` on every connection, encoding it once per codec.

        The frame cache lives on the message, keyed by codec: a broadcast to N connections of
        k subprotocols encodes k frames (design: encode once per fan-out); reliable
        connections add only their sequence id. Returns the connections whose resend buffer
        overflowed, which the caller must close.
        """
        expires = message.expires
        if expires is not None and time.time() >= expires:
            return []  # its TTL ran out: it goes nowhere, and takes no sequence id
        frames = message.frames
        overflowed: list[Connection] = []
        for conn in conns:
            codec = conn.codec
            frame = frames.get(codec)
            if frame is None:
                if conn.per_message:
                    # MQTT: bytes may depend on the subscription (QoS, packet id, No Local,
                    # identifier), so the connection decides; its parts are cached on the
                    # message, and a frame every shared MQTT connection takes as is, under
                    # its codec (SharedMqttCodec). Off the hot path for the other codecs.
                    if not conn.deliver_message(message):
                        overflowed.append(conn)
                    continue
                frame = frames[codec] = codec.encode_message(message)
            if conn.recovery is None and expires is None:
                # Hot path: a non-reliable connection just queues the shared bytes.
                if not conn.closed:
                    conn.transport.send(frame)
            elif not conn.deliver(frame, expires):
                overflowed.append(conn)
        return overflowed

    def _broadcast(self, message: Message) -> Applied:
        """A message to every connection of the hub: one frame per codec to the batcher for
        the plain connections, the others one by one."""
        assert self.batcher is not None
        frames = message.frames
        by_codec: dict[Codec, bytes] = {}
        for codec in self.plain_codecs:
            frame = frames.get(codec)
            if frame is None:
                frame = frames[codec] = codec.encode_message(message)
            by_codec[codec] = frame
        if by_codec:
            self.batcher.broadcast(self, by_codec)
        closed: list[Connection] = []
        if self.special:
            for conn in self.deliver(message, list(self.special.values())):
                self.close(conn, CloseCode.POLICY_VIOLATION, BUFFER_FULL)
                closed.append(conn)
        return Applied([], closed, len(self.connections) + len(closed))

    def close(self, conn: Connection, code: int, reason: str) -> None:
        """Remove a connection and close it (it will not be recoverable)."""
        self.remove(conn)
        conn.close(code, reason)

    # -- commands ---------------------------------------------------------------------------

    def apply(self, command: c.Command) -> Applied:
        """Apply a command to the local connections it names."""
        closed: list[Connection] = []
        targets: list[Connection] = []
        match command:
            case c.Send(c.ToAll(), message, excluded, None) if (
                self.batcher is not None
                and not excluded
                and message.stream is None
                and message.expires is None
            ):
                return self._broadcast(message)
            case c.Send(target, message, excluded, filter):
                if isinstance(target, c.ToGroup):
                    message = message.with_source(Source.GROUP, target.group)
                targets = self.select(target, excluded, filter)
                if message.stream is not None and message.stream.end:
                    # A stream's terminal frame has no payload for simple clients.
                    targets = [conn for conn in targets if conn.codec.is_pubsub]
                for conn in self.deliver(message, targets):
                    self.close(conn, CloseCode.POLICY_VIOLATION, BUFFER_FULL)
                    closed.append(conn)
            case c.CloseConnections(target, reason, excluded):
                targets = self.select(target, excluded)
                for conn in targets:
                    # Reliable clients must not try to recover a deliberately closed session.
                    reliable = conn.codec.is_reliable
                    self.close(
                        conn, CloseCode.POLICY_VIOLATION if reliable else CloseCode.NORMAL, reason
                    )
                    closed.append(conn)
            case c.AddToGroup(target, group):
                targets = self.select(target)
                for conn in targets:
                    self.join(conn, group)
            case c.RemoveFromGroup(target, group):
                targets = self.select(target)
                for conn in targets:
                    self.leave(conn, group)
            case c.RemoveFromAllGroups(target):
                targets = self.select(target)
                for conn in targets:
                    for group in list(conn.groups):
                        self.leave(conn, group)
            case c.AddToGroups(groups, filter):
                targets = self.select(c.ToAll(), filter=filter)
                for conn in targets:
                    for group in groups:
                        self.join(conn, group)
            case c.RemoveFromGroups(groups, filter):
                targets = self.select(c.ToAll(), filter=filter)
                for conn in targets:
                    for group in groups:
                        self.leave(conn, group)
            case c.Grant(connection_id, permission, target_name):
                targets = self.select(c.ToConnection(connection_id))
                for conn in targets:
                    conn.roles.add(role_for(permission, target_name))
            case c.Revoke(connection_id, permission, target_name):
                targets = self.select(c.ToConnection(connection_id))
                for conn in targets:
                    revoke(conn.roles, permission, target_name)
        return Applied(targets, closed)
