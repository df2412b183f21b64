"""Group streams (spec-next 2): one publisher's ordered stream of fragments to a group.

The state of a connection's outbound streams and every transition of the spec's state
machine (2.7) live here, pure: the node feeds requests and the time in and gets back
:class:`Outcome` values saying what to send the publisher and what to publish to the group.

::

               start ok / streamAck(1)
    (none) ───────────────────────────► Open(expected=1, idle deadline)
                                          │ fragment == expected → publish, expected + 1, ack
                                          │ fragment <  expected → ack(expected) (a replay)
                                          │ fragment >  expected → nack(InvalidSequenceId)
                                          │ keepalive → the deadline moves
      end | idle | forbidden | bad frame | connection end
    Open ───────────────────────────────► Closed (terminal frame to the group; streamClosed)

A closed stream's answer is kept (the last 256 per connection) and repeated for a late frame:
after a recovery the JS client replays a ``streamEnd`` whose ``streamClosed`` it lost.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

DEFAULT_IDLE_MS = 300_000
MAX_IDLE_MS = 2**32 - 1
MAX_STREAMS = 1000  # active streams per connection
MAX_STREAM_ID = 256
RECENTLY_CLOSED = 256


@dataclass(frozen=True, slots=True)
class StreamError:
    """An error on a stream: ``name`` from the spec's lists, ``user_error_code`` only with
    ``UserError``."""

    name: str
    message: str = ""
    user_error_code: str | None = None


@dataclass(frozen=True, slots=True)
class StreamMark:
    """The ``stream`` descriptor of a fragment or terminal frame delivered to subscribers."""

    stream_id: str
    sequence_id: int
    end: bool = False
    error: StreamError | None = None


@dataclass(slots=True)
class Stream:
    stream_id: str
    group: str
    no_echo: bool
    idle_seconds: float
    deadline: float
    expected: int = 1


@dataclass(frozen=True, slots=True)
class Closed:
    """``streamClosed`` for the publisher (``error`` None: a normal end)."""

    stream_id: str
    error: StreamError | None = None


@dataclass(frozen=True, slots=True)
class Ack:
    """``streamAck``, or ``streamNack`` with ``nack`` set (its name and message)."""

    stream_id: str
    expected: int
    nack: StreamError | None = None


@dataclass(frozen=True, slots=True)
class Publish:
    """A frame for the group: a fragment (``data``) or the terminal frame (``mark.end``)."""

    stream: Stream
    mark: StreamMark
    data: bytes = b""
    data_type: str = "text"


@dataclass(slots=True)
class Outcome:
    """What a request did: the answer to the publisher and what goes to the group."""

    answer: Ack | Closed | None = None
    publish: Publish | None = None


@dataclass(slots=True)
class Streams:
    """One connection's outbound streams."""

    open: dict[str, Stream] = field(default_factory=dict)
    closed: OrderedDict[str, Closed] = field(default_factory=OrderedDict)

    # -- requests -----------------------------------------------------------------------

    def start(
        self, stream_id: str, group: str, no_echo: bool, idle_ms: int | None, now: float
    ) -> Ack | Closed:
        """A start frame whose permission was checked: ack 1, or refuse."""
        if stream_id in self.open:
            return Closed(stream_id, StreamError("BadRequest", "The stream is already open."))
        if len(self.open) >= MAX_STREAMS:
            return Closed(
                stream_id,
                StreamError("BadRequest", f"At most {MAX_STREAMS} streams may be open at once."),
            )
        idle = (idle_ms if idle_ms is not None else DEFAULT_IDLE_MS) / 1000
        self.open[stream_id] = Stream(stream_id, group, no_echo, idle, now + idle)
        self.closed.pop(stream_id, None)
        return Ack(stream_id, 1)

    def fragment(
        self, stream_id: str, sequence_id: int, data: bytes, data_type: str, now: float
    ) -> Outcome:
        stream = self.open.get(stream_id)
        if stream is None:
            return Outcome(self._not_found(stream_id))
        stream.deadline = now + stream.idle_seconds
        if sequence_id < stream.expected:
            return Outcome(Ack(stream_id, stream.expected))  # a replay: already published
        if sequence_id > stream.expected:
            message = f"Expected streamSequenceId {stream.expected} but received {sequence_id}."
            nack = StreamError("InvalidSequenceId", message)
            return Outcome(Ack(stream_id, stream.expected, nack))
        stream.expected += 1
        mark = StreamMark(stream_id, sequence_id)
        return Outcome(Ack(stream_id, stream.expected), Publish(stream, mark, data, data_type))

    def keepalive(self, stream_id: str, now: float) -> Closed | None:
        stream = self.open.get(stream_id)
        if stream is None:
            return self._not_found(stream_id)
        stream.deadline = now + stream.idle_seconds
        return None

    def end(self, stream_id: str, error: StreamError | None) -> Outcome:
        """``streamEnd``: the terminal frame (a ``UserError`` if the publisher gave one),
        and a ``streamClosed`` without error."""
        if stream_id not in self.open:
            return Outcome(self._not_found(stream_id))
        return self._close(stream_id, error, None)

    def fail(self, stream_id: str, to_group: StreamError, to_publisher: StreamError) -> Outcome:
        """End an open stream on an error (a bad fragment, a revoked permission)."""
        if stream_id not in self.open:
            return Outcome(Closed(stream_id, to_publisher))
        return self._close(stream_id, to_group, to_publisher)

    def expire(self, now: float) -> list[Outcome]:
        """Streams idle past their timeout: ``IdleTimeout`` to the group and the publisher."""
        out = []
        for stream in [s for s in self.open.values() if s.deadline <= now]:
            ms = round(stream.idle_seconds * 1000)
            error = StreamError("IdleTimeout", f"No stream activity within {ms} ms.")
            out.append(self._close(stream.stream_id, error, error))
        return out

    def cancel_all(self) -> list[Publish]:
        """The connection ended: each open stream's terminal ``Cancelled`` frame."""
        error = StreamError("Cancelled", "The publisher's connection ended.")
        publishes = [self._close(sid, error, None).publish for sid in list(self.open)]
        return [p for p in publishes if p is not None]

    def next_deadline(self) -> float | None:
        return min((s.deadline for s in self.open.values()), default=None)

    # -- transitions ----------------------------------------------------------------------

    def _close(
        self, stream_id: str, to_group: StreamError | None, to_publisher: StreamError | None
    ) -> Outcome:
        stream = self.open.pop(stream_id)
        closed = Closed(stream_id, to_publisher)
        self.closed[stream_id] = closed
        while len(self.closed) > RECENTLY_CLOSED:
            self.closed.popitem(last=False)
        mark = StreamMark(stream_id, stream.expected, True, to_group)
        return Outcome(closed, Publish(stream, mark))

    def _not_found(self, stream_id: str) -> Closed:
        return self.closed.get(stream_id) or Closed(
            stream_id, StreamError("StreamNotFound", f"The stream '{stream_id[:64]}' is not open.")
        )
