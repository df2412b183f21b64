"""Moving a reliable connection to the node its client came back through.

The node a reliable client reconnects to (B) may not hold its connection: another node (A)
does, detached, with the messages the client has not acknowledged. B subscribes to the hub,
then publishes a *move request* on the hub's channel. A Redis channel delivers in one order to
every subscriber, so the request splits the hub's commands in two:

* those before it reached A before the request: A applied them to the connection, they are in
  its snapshot. A's own commands are the exception: A applies them when they are executed and
  publishes them later, so A also names the last sequence number it gave its own publishes
  when it let go (``mark``);
* those after it reached B after its subscription: B applies them to the connection itself,
  when it adopts it, minus A's up to ``mark``. B's own commands executed after it queued the
  request are published after it, so they belong here too.

A answers on the same channel once the snapshot is written to Redis (a hash that expires).
So a message sent meanwhile is delivered exactly once, in order, whichever node it went
through. Nothing of this runs for connections that are not reliable or never move.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from ..core import commands as c
from ..core.handover import Snapshot

REQUEST = b'{"t":"mvreq"'
ANSWER = b'{"t":"mvans"'
MOVE_PREFIX = b'{"t":"mv'
SNAPSHOT_TTL = 120  # seconds a written snapshot waits for its reader


def snapshot_key(prefix: str, connection_id: str) -> str:
    return f"{prefix}mv:{connection_id}"


@dataclass(frozen=True, slots=True)
class MoveRequest:
    """B to A: hand this connection over (A checks the token)."""

    connection_id: str
    token: str
    subprotocol: str
    holder: str  # A's node id: only it answers
    requester: str  # B's node id

    def encode(self) -> bytes:
        body = {
            "t": "mvreq",
            "c": self.connection_id,
            "tok": self.token,
            "sp": self.subprotocol,
            "from": self.holder,
            "to": self.requester,
        }
        return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class MoveAnswer:
    """A to B: the snapshot is in Redis (``ok``), or why not."""

    connection_id: str
    requester: str
    ok: bool
    reason: str = ""
    mark: int = 0

    def encode(self) -> bytes:
        body = {
            "t": "mvans",
            "c": self.connection_id,
            "to": self.requester,
            "ok": self.ok,
            "why": self.reason,
            "mark": self.mark,
        }
        return json.dumps(body, separators=(",", ":")).encode()


def decode_move(body: bytes) -> MoveRequest | MoveAnswer | None:
    """A move message, or None for anything else (or malformed)."""
    try:
        raw: dict[str, Any] = json.loads(body)
        if raw["t"] == "mvreq":
            return MoveRequest(
                str(raw["c"]), str(raw["tok"]), str(raw["sp"]), str(raw["from"]), str(raw["to"])
            )
        if raw["t"] == "mvans":
            return MoveAnswer(
                str(raw["c"]), str(raw["to"]), bool(raw["ok"]), str(raw["why"]), int(raw["mark"])
            )
    except (ValueError, KeyError, TypeError):
        return None
    return None


@dataclass(slots=True)
class PendingMove:
    """B's side of one move, from the request until it adopts the connection."""

    hub: str
    request: MoveRequest
    holder_sender: bytes
    echoed: bool = False  # our request came back: later commands are not in the snapshot
    # (sender, sequence, command) in the order this node applied them to its own connections
    later: list[tuple[bytes, int, c.Command]] = field(default_factory=list)
    answer: asyncio.Future[MoveAnswer] | None = None

    def own(self, sender: bytes, sequence: int, command: c.Command) -> None:
        """A command this node executed after queueing the request."""
        self.later.append((sender, sequence, command))

    def remote(self, sender: bytes, sequence: int, command: c.Command) -> None:
        """A command from another node, received by this one."""
        if self.echoed:
            self.later.append((sender, sequence, command))

    def commands(self, mark: int) -> list[c.Command]:
        """What the snapshot does not reflect: everything logged but A's own up to ``mark``."""
        holder = self.holder_sender
        return [
            command
            for sender, sequence, command in self.later
            if not (sender == holder and sequence <= mark)
        ]


@dataclass(slots=True)
class Adoption:
    """What B needs to adopt a connection: the snapshot and the commands it lacks."""

    snapshot: Snapshot
    pending: PendingMove
    mark: int
    done: bool = False

    def commands(self) -> list[c.Command]:
        """Final (call it and adopt in the same step): logging stops here."""
        self.done = True
        return self.pending.commands(self.mark)
