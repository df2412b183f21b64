"""Live trace records: an observer that turns what the service does into small JSON records.

Theory of operation: :class:`LiveTrace` is an :class:`~webpubsub.core.observe.Observer` that
is registered with the node only while at least one :class:`Viewer` is subscribed, so a
service nobody watches pays nothing. Each hook builds one record (a plain dict shaped after
Azure's resource-log archive, spec 7) and offers it to every viewer whose :class:`TraceFilter`
matches. A viewer's queue is bounded: past its limit the oldest record is dropped and counted,
so a slow browser never grows the service's memory.

There is no socket or event loop here; ``webpubsub.server.ops._livetrace`` streams viewers'
records to browsers as server-sent events.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ...core import commands as c
from ...core.message import DataType
from ...core.observe import Observer, Observers
from ...core.requests import (
    ClientRequest,
    JoinGroup,
    LeaveGroup,
    Ping,
    SendEvent,
    SendToGroup,
    SequenceAck,
    Unsupported,
)
from ._redact import redact

if TYPE_CHECKING:
    from ...core.connection import Connection

Record = dict[str, Any]
"""One trace record: JSON-ready, with only the fields that apply (see docs/operability.md)."""

PREVIEW_BYTES = 96
"""How much of a payload a preview shows (previews are off unless a viewer asks)."""

DEFAULT_VIEWER_LIMIT = 5000
"""Records a viewer may have waiting before the oldest are dropped."""


class Category(StrEnum):
    """Record categories: Azure's three resource-log categories plus event handler calls."""

    CONNECTIVITY = "ConnectivityLogs"
    MESSAGING = "MessagingLogs"
    HTTP = "HttpRequestLogs"
    EVENT_HANDLER = "EventHandlerLogs"


class Level(StrEnum):
    """Log levels as Azure's live trace tool names them (spec 7)."""

    INFO = "Informational"
    WARNING = "Warning"
    ERROR = "Error"


@dataclass(frozen=True, slots=True)
class TraceFilter:
    """Which records a viewer wants; an empty field matches everything.

    ``group`` matches records about that group (a join, a send to it); ``user`` and
    ``connection`` match records of that user or connection, including sends aimed at them.
    """

    hub: str = ""
    user: str = ""
    connection: str = ""
    group: str = ""
    categories: frozenset[Category] = frozenset()

    @classmethod
    def from_query(cls, query: dict[str, list[str]]) -> TraceFilter:
        """Build a filter from stream query parameters (``category`` may repeat or be a list)."""

        def one(name: str) -> str:
            values = query.get(name)
            return values[0].strip() if values else ""

        wanted: set[Category] = set()
        for value in query.get("category", []):
            for name in value.split(","):
                for category in Category:
                    if name.strip().lower() in (category.value.lower(), category.name.lower()):
                        wanted.add(category)
        return cls(one("hub"), one("user"), one("connection"), one("group"), frozenset(wanted))

    def matches(self, record: Record) -> bool:
        if self.categories and record["category"] not in self.categories:
            return False
        if self.hub and record.get("hub", "").lower() != self.hub.lower():
            return False
        if self.user and record.get("userId") != self.user:
            return False
        if self.connection and record.get("connectionId") != self.connection:
            return False
        return not self.group or record.get("group") == self.group


class Viewer:
    """One live trace subscriber: a filter and a bounded queue of records to send.

    Args:
        trace_filter: the records this viewer wants.
        preview: whether records carry a payload preview.
        limit: records kept waiting before the oldest are dropped.
        wake: called (at most once between two :meth:`take` calls) when records arrive.
    """

    __slots__ = ("_notified", "_queue", "dropped", "filter", "limit", "preview", "wake")

    def __init__(
        self,
        trace_filter: TraceFilter | None = None,
        *,
        preview: bool = False,
        limit: int = DEFAULT_VIEWER_LIMIT,
        wake: Callable[[], None] | None = None,
    ) -> None:
        self.filter = trace_filter or TraceFilter()
        self.preview = preview
        self.limit = limit
        self.wake = wake
        self.dropped = 0
        self._queue: deque[Record] = deque()
        self._notified = False

    def offer(self, record: Record, preview: str | None) -> None:
        """Queue a record if the filter takes it (dropping the oldest when full)."""
        if not self.filter.matches(record):
            return
        if self.preview and preview is not None:
            record = {**record, "preview": preview}
        if len(self._queue) >= self.limit:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(record)
        if not self._notified and self.wake is not None:
            self._notified = True
            self.wake()

    def take(self) -> list[Record]:
        """Everything queued so far, oldest first; the queue is left empty."""
        records = list(self._queue)
        self._queue.clear()
        self._notified = False
        return records

    def __len__(self) -> int:
        return len(self._queue)


class LiveTrace(Observer):
    """Builds trace records and hands them to viewers; observes only while watched.

    Args:
        observers: the node's observer fan-out; this trace adds itself on the first
            subscription and removes itself when the last viewer leaves.
        clock: wall-clock time in seconds (injected by tests).
    """

    def __init__(self, observers: Observers, clock: Callable[[], float] = time.time) -> None:
        self._observers = observers
        self._clock = clock
        self.viewers: list[Viewer] = []
        self._preview_wanted = False
        self.worker: int | None = None  # stamped on every record under serve --workers

    @property
    def observing(self) -> bool:
        """Whether the trace is registered with the node (some viewer is watching)."""
        return bool(self.viewers)

    def subscribe(self, viewer: Viewer) -> Viewer:
        """Start sending records to ``viewer``."""
        if not self.viewers:
            self._observers.add(self)
        self.viewers.append(viewer)
        self._preview_wanted = any(v.preview for v in self.viewers)
        return viewer

    def unsubscribe(self, viewer: Viewer) -> None:
        """Stop sending records to ``viewer``; the last one out unregisters the trace."""
        if viewer in self.viewers:
            self.viewers.remove(viewer)
        self._preview_wanted = any(v.preview for v in self.viewers)
        if not self.viewers:
            self._observers.remove(self)

    @property
    def dropped(self) -> int:
        return sum(viewer.dropped for viewer in self.viewers)

    # -- building and publishing records -----------------------------------------------------

    def _publish(self, record: Record, data: bytes | None = None, data_type: str = "") -> None:
        now = self._clock()
        record["time"] = _iso(now)
        record["ts"] = round(now, 3)
        if self.worker is not None:
            record["worker"] = self.worker
        preview = _preview(data, data_type) if data is not None and self._preview_wanted else None
        for viewer in self.viewers:
            viewer.offer(record, preview)

    def connection_opened(self, conn: Connection, peer: str) -> None:
        record = _connection_record(conn, "ConnectionStarted", Level.INFO)
        record["message"] = "Connection started."
        if peer:
            record["ip"] = peer
        if conn.groups:
            record["groups"] = sorted(conn.groups)
        self._publish(record)

    def connection_closed(self, conn: Connection, reason: str) -> None:
        record = _connection_record(conn, "ConnectionEnded", Level.INFO)
        record["message"] = f"Connection ended: {reason}" if reason else "Connection ended."
        if reason:
            record["reason"] = reason
        self._publish(record)

    def connection_moved(self, conn: Connection, arrived: bool) -> None:
        record = _connection_record(conn, "ConnectionMoved", Level.INFO)
        record["message"] = (
            "Connection recovered here from another node."
            if arrived
            else "Connection recovered through another node."
        )
        record["direction"] = "in" if arrived else "out"
        self._publish(record)

    def invocation_done(self, conn: Connection, event: str, outcome: str, seconds: float) -> None:
        ok = outcome in ("success", "cancelled")
        record = _connection_record(conn, "Invocation", Level.INFO if ok else Level.WARNING)
        record["category"] = Category.MESSAGING
        record["event"] = event
        record["outcome"] = outcome
        record["duration"] = round(seconds * 1000, 3)
        what = f"invocation of '{event}'" if event else "invocation"
        record["message"] = f"Client {what}: {outcome}."
        self._publish(record)

    def stream_changed(
        self, conn: Connection, group: str, stream_id: str, opened: bool, error: str | None
    ) -> None:
        name = "GroupStreamOpened" if opened else "GroupStreamEnded"
        failed = error is not None and error != "UserError"
        record = _connection_record(conn, name, Level.WARNING if failed else Level.INFO)
        record["category"] = Category.MESSAGING
        record["group"] = group
        record["streamId"] = stream_id
        if opened:
            record["message"] = f"Group stream '{stream_id}' to '{group}' opened."
        else:
            ended = f" with {error}" if error else ""
            record["message"] = f"Group stream '{stream_id}' to '{group}' ended{ended}."
            if error:
                record["error"] = error
        self._publish(record)

    def slow_consumer(self, conn: Connection, buffered: int) -> None:
        record = _connection_record(conn, "ConnectionAborted", Level.WARNING)
        reason = f"Slow consumer: {buffered} bytes were waiting to be written."
        record["message"] = f"Connection aborted: {reason}"
        record["reason"] = reason
        self._publish(record)

    def request_received(self, conn: Connection, request: ClientRequest, size: int) -> None:
        kind, target, group = _describe_request(request)
        record: Record = {
            "category": Category.MESSAGING,
            "level": Level.INFO,
            "operationName": "MessageReceived",
            "hub": conn.hub,
            "connectionId": conn.connection_id,
            "kind": kind,
            "target": target,
            "size": size,
            "message": f"Received {kind} ({size} bytes)" + (f" for {target}." if target else "."),
        }
        if conn.user_id is not None:
            record["userId"] = conn.user_id
        if group is not None:
            record["group"] = group
        data: bytes | None = None
        data_type = ""
        if isinstance(request, SendToGroup | SendEvent):
            data, data_type = request.data, request.data_type.value
            record["dataType"] = data_type
        self._publish(record, data, data_type)

    def command_applied(self, hub: str, command: c.Command, recipients: int) -> None:
        record: Record = {
            "category": Category.MESSAGING,
            "level": Level.INFO,
            "hub": hub,
            "recipients": recipients,
        }
        target = getattr(command, "target", None)
        if target is not None:
            record["target"] = _target_text(target)
            _target_fields(record, target)
        if isinstance(command, c.Send):
            message = command.message
            data_type = message.data_type.value
            record["operationName"] = "MessageSent"
            record["size"] = len(message.data)
            record["dataType"] = data_type
            record["message"] = (
                f"Sent {len(message.data)} bytes of {data_type} to {record['target']}: "
                f"{recipients} recipient{'' if recipients == 1 else 's'} here."
            )
            self._publish(record, message.data, data_type)
            return
        name = type(command).__name__
        record["operationName"] = name
        groups = getattr(command, "groups", None)
        group = getattr(command, "group", None)
        if group is not None:
            record["group"] = group
        elif groups:
            record["group"] = groups[0] if len(groups) == 1 else ",".join(groups)
        record["message"] = f"{name} applied to {recipients} connection(s) here."
        self._publish(record)

    def rest_call(
        self, method: str, path: str, operation: str, status: int, seconds: float
    ) -> None:
        if path.startswith("/livetrace"):
            return  # the viewer's own page and stream are not news
        level = Level.ERROR if status >= 500 else Level.WARNING if status >= 400 else Level.INFO
        record: Record = {
            "category": Category.HTTP,
            "level": level,
            "operationName": "HttpRequest",
            "method": method,
            "url": path,
            "status": status,
            "duration": round(seconds * 1000, 3),
            "message": f"{method} {path} answered {status}.",
        }
        if operation != "-":
            record["operation"] = operation
        hub = _hub_of_path(path)
        if hub is not None:
            record["hub"] = hub
        self._publish(record)

    def upstream_call(
        self, hub: str, event: str, url: str, status: int | None, seconds: float, error: str | None
    ) -> None:
        failed = status is None or status >= 400
        url = redact(url)  # a ?code= function key must not reach a viewer's download either
        outcome = f"answered {status}" if status is not None else f"failed ({error})"
        record: Record = {
            "category": Category.EVENT_HANDLER,
            "level": Level.WARNING if failed else Level.INFO,
            "operationName": "EventHandlerCall",
            "hub": hub,
            "event": event,
            "url": url,
            "duration": round(seconds * 1000, 3),
            "message": f"Event '{event}' to {url} {outcome}.",
        }
        if status is not None:
            record["status"] = status
        if error is not None:
            record["error"] = error
        self._publish(record)


# -- helpers ------------------------------------------------------------------------------


def _iso(seconds: float) -> str:
    stamp = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _connection_record(conn: Connection, name: str, level: Level) -> Record:
    record: Record = {
        "category": Category.CONNECTIVITY,
        "level": level,
        "operationName": name,
        "hub": conn.hub,
        "connectionId": conn.connection_id,
        "subprotocol": conn.subprotocol or "",
    }
    if conn.user_id is not None:
        record["userId"] = conn.user_id
    return record


_REQUEST_KINDS: dict[type, str] = {
    JoinGroup: "joinGroup",
    LeaveGroup: "leaveGroup",
    SendToGroup: "sendToGroup",
    SendEvent: "event",
    Ping: "ping",
    SequenceAck: "sequenceAck",
    Unsupported: "unsupported",
}


def request_kind(request: ClientRequest) -> str:
    """The client message type of a request, as the JSON subprotocol spells it (spec 4.3)."""
    return _REQUEST_KINDS.get(type(request), "unknown")


def _describe_request(request: ClientRequest) -> tuple[str, str, str | None]:
    """(kind, target text, group) of a client request."""
    kind = request_kind(request)
    match request:
        case JoinGroup(group) | LeaveGroup(group) | SendToGroup(group):
            return kind, f"group:{group}", group
        case SendEvent(event):
            return kind, f"event:{event}", None
        case SequenceAck(sequence_id):
            return kind, f"sequenceId:{sequence_id}", None
        case Unsupported(type=name):
            return kind, name, None
    return kind, "", None


def _target_text(target: c.Target) -> str:
    match target:
        case c.ToAll():
            return "all"
        case c.ToGroup(group):
            return f"group:{group}"
        case c.ToUser(user_id):
            return f"user:{user_id}"
        case c.ToConnection(connection_id):
            return f"connection:{connection_id}"
    return str(target)  # pragma: no cover - Target is a closed union


def _target_fields(record: Record, target: c.Target) -> None:
    """Copy the target's id into the field a filter looks at (group, user, connection)."""
    match target:
        case c.ToGroup(group):
            record["group"] = group
        case c.ToUser(user_id):
            record["userId"] = user_id
        case c.ToConnection(connection_id):
            record["connectionId"] = connection_id


def target_kind(target: c.Target) -> str:
    """``all``, ``group``, ``user`` or ``connection``: the kind of a send's target."""
    return _TARGET_KINDS.get(type(target), "other")


_TARGET_KINDS: dict[type, str] = {
    c.ToAll: "all",
    c.ToGroup: "group",
    c.ToUser: "user",
    c.ToConnection: "connection",
}


def _hub_of_path(path: str) -> str | None:
    """The hub of a REST or client path (``/api/hubs/{hub}/...``, ``/client/hubs/{hub}``)."""
    parts = path.split("/")
    for index, part in enumerate(parts[:-1]):
        if part == "hubs":
            return parts[index + 1] or None
    return None


def _preview(data: bytes, data_type: str) -> str:
    """The start of a payload: text for text/JSON, hex for binary and protobuf."""
    head = data[:PREVIEW_BYTES]
    more = "…" if len(data) > PREVIEW_BYTES else ""
    if data_type in (DataType.TEXT, DataType.JSON):
        return head.decode("utf-8", "replace") + more
    return head.hex(" ") + more
