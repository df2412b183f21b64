"""A reliable connection moving between nodes: what travels, and how it is read back.

A reliable client whose socket dropped may come back through any node of a cluster (behind a
load balancer without sticky sessions). The node it reaches asks the node that holds it to
hand it over; that node takes a :class:`Snapshot` of the connection (identity, roles, groups,
upstream state, ackId history, the resend buffer and its sequence numbers) and forgets it
without any event, and the new node adopts it. The engine carries the snapshot and decides
which commands the snapshot already reflects (``engine/handover.py``); this module is pure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .connection import Codec, Connection, Transport
from .reliable import Recovery, ResendBuffer


class HandoverError(ValueError):
    """Bytes that are not a snapshot."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a reliable connection is, apart from its socket."""

    hub: str
    connection_id: str
    subprotocol: str
    token: str
    user_id: str | None
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    state: str | None
    event_id: int
    ack_ids: tuple[int, ...]
    next_id: int
    # (sequence id, the message's frames joined, TTL end or None), oldest first
    messages: tuple[tuple[int, bytes, float | None], ...]
    window_left: float  # seconds of the recovery window left when it was taken
    # The last sequence number the holding node gave its own publishes when it let go:
    # those up to it are in ``messages`` already.
    marks: dict[str, int] = field(default_factory=dict)
    # What a kind of connection keeps beyond the core's fields, as JSON (an MQTT session:
    # ``core.mqtt.Session.to_json``); None for the Web PubSub subprotocols.
    session: dict[str, Any] | None = None


def take(conn: Connection, now: float, recovery_window: float) -> Snapshot:
    """The snapshot of a reliable connection or of a connection with its own session state
    (MQTT: ``Connection.session_state``)."""
    recovery = conn.recovery
    assert conn.codec.subprotocol is not None
    if recovery is None:
        session = conn.session_state()
        assert session is not None, "only reliable connections and sessions move"
        return Snapshot(
            hub=conn.hub,
            connection_id=conn.connection_id,
            subprotocol=conn.codec.subprotocol,
            token="",
            user_id=conn.user_id,
            roles=tuple(sorted(conn.roles)),
            groups=tuple(sorted(conn.groups)),
            state=conn.state,
            event_id=conn.event_id,
            ack_ids=(),
            next_id=0,
            messages=(),
            window_left=0.0,
            session=session,
        )
    buffer = recovery.buffer
    deadline = recovery.deadline if recovery.deadline is not None else now + recovery_window
    return Snapshot(
        hub=conn.hub,
        connection_id=conn.connection_id,
        subprotocol=conn.codec.subprotocol,
        token=recovery.token,
        user_id=conn.user_id,
        roles=tuple(sorted(conn.roles)),
        groups=tuple(sorted(conn.groups)),
        state=conn.state,
        event_id=conn.event_id,
        ack_ids=conn.ack_ids(),
        next_id=buffer.next_id,
        messages=tuple(
            (sequence_id, b"".join(pieces), expires)
            for sequence_id, pieces, expires in buffer.entries()
        ),
        window_left=max(0.0, deadline - now),
    )


def restore(snapshot: Snapshot, codec: Codec, transport: Transport) -> Connection:
    """A connection equal to the one the snapshot was taken of, on ``transport``; not yet
    in any hub (``Node.adopt`` registers it)."""
    conn = Connection(
        snapshot.hub,
        codec,
        transport,
        user_id=snapshot.user_id,
        roles=snapshot.roles,
        connection_id=snapshot.connection_id,
    )
    conn.state = snapshot.state
    conn.event_id = snapshot.event_id
    for ack_id in snapshot.ack_ids:
        conn.seen_ack(ack_id)
    buffer = ResendBuffer()
    for sequence_id, data, expires in snapshot.messages:
        buffer.push(sequence_id, (data,), expires)
    buffer.next_id = snapshot.next_id
    recovery = Recovery(buffer)
    recovery.token = snapshot.token
    conn.recovery = recovery
    return conn


# -- as Redis hash fields: "meta" (JSON) and one field per buffered message ---------------


def to_fields(snapshot: Snapshot) -> dict[str, bytes]:
    meta = {
        "hub": snapshot.hub,
        "id": snapshot.connection_id,
        "sp": snapshot.subprotocol,
        "tok": snapshot.token,
        "user": snapshot.user_id,
        "roles": list(snapshot.roles),
        "groups": list(snapshot.groups),
        "state": snapshot.state,
        "eid": snapshot.event_id,
        "acks": list(snapshot.ack_ids),
        "next": snapshot.next_id,
        "seq": [[sid, exp] for sid, _, exp in snapshot.messages],
        "left": snapshot.window_left,
        "marks": snapshot.marks,
        "sess": snapshot.session,
    }
    fields = {"meta": json.dumps(meta, separators=(",", ":")).encode()}
    for index, (_, data, _) in enumerate(snapshot.messages):
        fields[f"m{index}"] = data
    return fields


def from_fields(fields: dict[bytes, bytes]) -> Snapshot:
    """Read :func:`to_fields` back; raises HandoverError on anything else."""
    try:
        meta: dict[str, Any] = json.loads(fields[b"meta"])
        messages = tuple(
            (int(sid), fields[f"m{index}".encode()], None if exp is None else float(exp))
            for index, (sid, exp) in enumerate(meta["seq"])
        )
        return Snapshot(
            hub=str(meta["hub"]),
            connection_id=str(meta["id"]),
            subprotocol=str(meta["sp"]),
            token=str(meta["tok"]),
            user_id=None if meta["user"] is None else str(meta["user"]),
            roles=tuple(str(r) for r in meta["roles"]),
            groups=tuple(str(g) for g in meta["groups"]),
            state=None if meta["state"] is None else str(meta["state"]),
            event_id=int(meta["eid"]),
            ack_ids=tuple(int(a) for a in meta["acks"]),
            next_id=int(meta["next"]),
            messages=messages,
            window_left=float(meta["left"]),
            marks={str(k): int(v) for k, v in dict(meta["marks"]).items()},
            session=_session(meta.get("sess")),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise HandoverError(f"malformed connection snapshot: {exc!r}") from None


def _session(raw: Any) -> dict[str, Any] | None:
    if raw is not None and not isinstance(raw, dict):
        raise TypeError("a session must be an object")
    return raw
