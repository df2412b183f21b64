"""The Sans-I/O core of the client: lifecycle, acks, sequence ids, groups and timers.

Theory of operation
-------------------

:class:`ClientCore` opens no socket, starts no task and reads no clock: every input comes
with ``now`` (seconds on any monotonic clock), and every output is a value to collect. The
asyncio layer (:mod:`webpubsub.client._client`) drives it like this:

* it asks :meth:`~ClientCore.next_attempt` what to connect to and after what delay: a
  fresh URL from the credential, or a recovery URL of the current connection;
* it reports what the socket does: :meth:`~ClientCore.socket_opened`,
  :meth:`~ClientCore.receive` for every message, :meth:`~ClientCore.socket_closed`,
  or :meth:`~ClientCore.attempt_failed` when no socket opened;
* it hands operations in: :meth:`~ClientCore.track` for requests with an ackId,
  :meth:`~ClientCore.send_untracked` for fire-and-forget sends;
* after each call it writes :meth:`~ClientCore.data_to_send` to the socket, in order,
  acts on :meth:`~ClientCore.events_received`, and arranges to call
  :meth:`~ClientCore.handle_timer` at :meth:`~ClientCore.get_timer`.

States and their transitions, all in :data:`TRANSITIONS` and changed only by ``_set_state``
(spec 4.7 and the official JS client's lifecycle)::

    STOPPED ──start()──> CONNECTING ──`connected` message──> CONNECTED
    CONNECTED ──socket lost, reliable, not 1008──> RECOVERING ──`connected`──> CONNECTED
    CONNECTED/RECOVERING ──lost for good──> DISCONNECTED ──next attempt──> CONNECTING
    any state ──stop(), a failed start, or no more reconnects──> STOPPED

Requests that carry an ackId stay in the ack table until their ack arrives or their deadline
passes. Whenever a socket reaches CONNECTED they are (re)sent with the same ackId and the
same bytes: after a recovery the service answers ``Duplicate`` for those it had already
processed (spec 4.5), so nothing runs twice on one logical connection.
"""

from __future__ import annotations

import enum
import heapq
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..core.errors import ProtocolViolation
from ..core.requests import (
    CancelInvocation,
    Invoke,
    JoinGroup,
    LeaveGroup,
    Ping,
    SendEvent,
    SendToGroup,
    SequenceAck,
    SetGroupState,
    StreamData,
    StreamEnd,
    StreamStart,
    SubscribeGroupState,
)
from ..protocols.client import ClientCodec, client_codec
from ..protocols.downstream import (
    Ack,
    Connected,
    Disconnected,
    GroupMessage,
    GroupStates,
    InvokeResponse,
    Pong,
    ServerMessage,
    StreamAnswer,
)
from ..protocols.json import RELIABLE_SUBPROTOCOL
from ._errors import (
    ClientStoppedError,
    ConnectError,
    SendMessageError,
    SendTimeoutError,
    ack_error,
)
from ._events import (
    AckResult,
    ClientEvent,
    ConnectedEvent,
    DisconnectedEvent,
    RejoinGroupFailedEvent,
    StoppedEvent,
)

log = logging.getLogger("webpubsub.client")

POLICY_VIOLATION = 1008
"""Close code of a connection the service removed: never try to recover it (spec 4.10)."""

QUICK_SEQUENCE_ACK = 300
"""Acknowledge at once when this many messages are unacknowledged (spec 4.7; as the JS client)."""

MIB = 1024 * 1024
DEFAULT_PROTOCOL = RELIABLE_SUBPROTOCOL
MAX_MESSAGE_SIZE = 16 * MIB


class State(enum.Enum):
    """Where the client is in its lifecycle."""

    STOPPED = "stopped"
    """Not started, stopped, or given up."""
    CONNECTING = "connecting"
    """Opening a new connection: getting a URL, connecting, awaiting ``connected``."""
    CONNECTED = "connected"
    """The connection is up: requests go out as soon as they are made."""
    RECOVERING = "recovering"
    """Reliable protocols: the socket dropped; reattaching to the same connection."""
    DISCONNECTED = "disconnected"
    """The connection ended for good; a new one will be opened (``auto_reconnect``)."""


TRANSITIONS: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.CONNECTING}),
    State.CONNECTING: frozenset({State.CONNECTED, State.DISCONNECTED, State.STOPPED}),
    State.CONNECTED: frozenset({State.RECOVERING, State.DISCONNECTED, State.STOPPED}),
    State.RECOVERING: frozenset({State.CONNECTED, State.DISCONNECTED, State.STOPPED}),
    State.DISCONNECTED: frozenset({State.CONNECTING, State.STOPPED}),
}
"""Every allowed state change; any other is a bug and raises RuntimeError."""


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How long to wait between attempts to open a new connection after one was lost.

    The first attempt is immediate; failed attempt ``n`` (from 1) is followed by a delay of
    ``min(max_delay, initial_delay * multiplier ** (n - 1))``, shortened by up to ``jitter``
    (a fraction) at random so that many clients do not come back in lockstep.

    Attributes:
        initial_delay: seconds after the first failed attempt.
        max_delay: the longest delay, in seconds.
        multiplier: growth of the delay per failed attempt (1.0: a fixed delay).
        jitter: fraction of the delay that may be cut at random (0 to 1).
        max_attempts: failed attempts before the client gives up and stops (None: never).
    """

    initial_delay: float = 1.0
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2
    max_attempts: int | None = None

    def delay(self, failures: int, rand: float) -> float | None:
        """Seconds to wait after ``failures`` failed attempts; None once they are too many.

        Args:
            failures: failed attempts so far (0 before the first attempt).
            rand: a random number in [0, 1) for the jitter.
        """
        if failures == 0:
            return 0.0
        if self.max_attempts is not None and failures > self.max_attempts:
            return None
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (failures - 1))
        return base * (1.0 - self.jitter * rand)


@dataclass(frozen=True, slots=True)
class ClientOptions:
    """Every setting of a client (see :class:`~webpubsub.client.WebPubSubClient`)."""

    protocol: str = DEFAULT_PROTOCOL
    auto_reconnect: bool = True
    auto_rejoin_groups: bool = True
    reconnect_policy: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    recovery_timeout: float = 30.0
    recovery_delay: float = 1.0
    ack_timeout: float | None = 30.0
    start_timeout: float | None = 30.0
    keep_alive_interval: float = 20.0
    keep_alive_timeout: float = 120.0
    sequence_ack_interval: float = 1.0
    max_message_size: int | None = MAX_MESSAGE_SIZE

    def __post_init__(self) -> None:
        client_codec(self.protocol)  # ValueError for an unknown subprotocol
        for name in ("recovery_timeout", "recovery_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.start_timeout is not None and self.start_timeout <= 0:
            raise ValueError("start_timeout must be positive (or None: wait forever)")
        for name in ("keep_alive_interval", "keep_alive_timeout", "sequence_ack_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative (0 turns it off)")
        if self.ack_timeout is not None and self.ack_timeout <= 0:
            raise ValueError("ack_timeout must be positive (or None: wait forever)")


# -- outputs for the I/O layer only ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """What to connect to next: ``url`` to recover, or None for a fresh URL."""

    url: str | None
    delay: float


@dataclass(frozen=True, slots=True)
class AckSettled:
    """An operation finished: ``result`` on success, else ``error``."""

    ack_id: int
    result: AckResult | None
    error: SendMessageError | None


@dataclass(frozen=True, slots=True)
class StartFailed:
    """The first connection of :meth:`ClientCore.start` could not be opened."""

    error: ConnectError


@dataclass(frozen=True, slots=True)
class AbortSocket:
    """The socket is dead (keep-alive timeout): drop it without a closing handshake."""

    reason: str


Event = ClientEvent | AckSettled | StartFailed | AbortSocket | InvokeResponse | StreamAnswer
AckedRequest = (
    JoinGroup | LeaveGroup | SendToGroup | SendEvent | SetGroupState | SubscribeGroupState
)
UntrackedRequest = (
    SendToGroup | SendEvent | Invoke | CancelInvocation | StreamStart | StreamData | StreamEnd
)


@dataclass(slots=True)
class _Pending:
    request: AckedRequest
    payload: bytes
    deadline: float | None
    rejoin: bool = False
    sent: bool = False


class ClientCore:
    """One client's protocol state, independent of sockets and clocks.

    Args:
        options: the client's settings.
        rand: source of random numbers in [0, 1) for the reconnect jitter.
    """

    def __init__(
        self, options: ClientOptions | None = None, *, rand: Callable[[], float] = random.random
    ) -> None:
        self.options = options or ClientOptions()
        self.codec: ClientCodec = client_codec(self.options.protocol)
        self._rand = rand
        self._state = State.STOPPED
        self._stopping = False
        self._socket_open = False
        self._ever_connected = False  # since start(): a failed first attempt fails start()
        # the current logical connection
        self._url: str | None = None
        self._connection_id: str | None = None
        self._user_id: str | None = None
        self._reconnection_token: str | None = None
        self._disconnected_message: str | None = None
        self._close_code: int | None = None  # of the socket a recovery is replacing
        # recovery and reconnection
        self._failures = 0
        self._recovery_deadline = 0.0
        # requests waiting for their ack, by ackId, in the order they were made
        self._next_ack_id = 0
        self._pending: dict[int, _Pending] = {}
        self._deadlines: list[tuple[float, int]] = []  # heap; stale entries skipped
        self._rejoins: set[int] = set()
        self._announce_connected = False
        self._joined: dict[str, None] = {}  # groups this client joined (ordered set)
        self._watched: dict[str, None] = {}  # groups whose state it subscribed to
        # reliable protocols: the largest sequence id received, and the largest acknowledged
        self._sequence_id = 0
        self._acked_sequence_id = 0
        self._sequence_ack_at: float | None = None
        # keep-alive
        self._last_received = 0.0
        self._last_ping = 0.0
        self._abort_requested = False
        # outputs
        self._events: list[Event] = []
        self._outgoing: list[bytes] = []

    # -- state ------------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """The current state."""
        return self._state

    def _set_state(self, state: State) -> None:
        if state not in TRANSITIONS[self._state]:
            raise RuntimeError(f"invalid transition from {self._state.name} to {state.name}")
        log.debug("client state %s -> %s", self._state.name, state.name)
        self._state = state

    @property
    def connection_id(self) -> str | None:
        """The id of the current (or recovering) connection."""
        return self._connection_id

    @property
    def user_id(self) -> str | None:
        """The user of the current connection, as the service told it."""
        return self._user_id

    @property
    def joined_groups(self) -> tuple[str, ...]:
        """Groups this client joined (and has not left): what ``auto_rejoin_groups`` rejoins."""
        return tuple(self._joined)

    @property
    def can_send(self) -> bool:
        """Whether requests go out now (connected, with a socket)."""
        return self._socket_open and self._state is State.CONNECTED

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Begin connecting; then follow :meth:`next_attempt`.

        Raises:
            RuntimeError: the client is not stopped.
        """
        if self._state is not State.STOPPED:
            raise RuntimeError(f"the client is already started (state: {self._state.value})")
        self._stopping = False
        self._ever_connected = False
        self._failures = 0
        self._set_state(State.CONNECTING)

    def next_attempt(self, now: float) -> Attempt | None:
        """What to connect to next, and after what delay; None when the client is stopped.

        In RECOVERING, past the recovery window this gives up recovery (the connection is
        lost: DISCONNECTED, or STOPPED without ``auto_reconnect``). In DISCONNECTED it moves
        to CONNECTING, or stops once the reconnect policy runs out of attempts.
        """
        if self._state is State.RECOVERING:
            url = self._recovery_url()
            if now < self._recovery_deadline and url is not None:
                delay = self.options.recovery_delay if self._failures else 0.0
                return Attempt(url, delay)
            log.info("could not recover connection %s in time", self._connection_id)
            self._connection_lost(self._close_code)
        if self._state is State.DISCONNECTED:
            backoff = self.options.reconnect_policy.delay(self._failures, self._rand())
            if backoff is None:
                log.warning("giving up reconnecting after %d failed attempts", self._failures)
                self._stop_now()
                return None
            self._set_state(State.CONNECTING)
            return Attempt(None, backoff)
        if self._state is State.CONNECTING:
            return Attempt(None, 0.0)
        if self._state is State.STOPPED:
            return None
        raise RuntimeError(f"no attempt to make while {self._state.value}")

    def attempt_failed(self, error: ConnectError, now: float) -> None:
        """An attempt ended without a usable socket (refused, network, closed early)."""
        self._socket_open = False
        if self._state is State.RECOVERING:
            self._failures += 1
            log.debug("recovery attempt %d failed: %s", self._failures, error)
        elif self._state is State.CONNECTING:
            if not self._ever_connected:
                self._stop_now(announce=False)
                self._events.append(StartFailed(error))
                return
            self._failures += 1
            log.info("reconnect attempt %d failed: %s", self._failures, error)
            self._set_state(State.DISCONNECTED)

    def socket_opened(self, url: str, now: float) -> None:
        """A WebSocket to ``url`` is open; the ``connected`` message comes next."""
        self._socket_open = True
        self._abort_requested = False
        self._last_received = self._last_ping = now
        if self._state is State.CONNECTING:
            self._url = url

    def socket_closed(self, code: int | None, reason: str, now: float) -> None:
        """The socket is gone (close frame ``code``, or 1006 for a dropped TCP connection)."""
        self._socket_open = False
        self._sequence_ack_at = None
        for entry in self._pending.values():
            entry.sent = False
        if self._stopping or self._state is State.STOPPED:
            self._finish_stop(code)
            return
        if self._state is State.CONNECTING:
            message = f"The connection closed before it was ready (code {code})"
            if reason or self._disconnected_message:
                message += f": {reason or self._disconnected_message}"
            self.attempt_failed(ConnectError(message + ".", close_code=code), now)
            return
        if self._state is State.RECOVERING:
            if code == POLICY_VIOLATION:
                log.info("the service refused to recover %s: %s", self._connection_id, reason)
                self._connection_lost(code)
            else:
                self.attempt_failed(ConnectError(f"closed with {code}", close_code=code), now)
            return
        if self._state is State.CONNECTED:
            if self._recoverable(code):
                log.info("connection %s dropped (code %s); recovering", self._connection_id, code)
                self._close_code = code
                self._failures = 0
                self._recovery_deadline = now + self.options.recovery_timeout
                self._set_state(State.RECOVERING)
            else:
                self._connection_lost(code)

    def stop(self) -> bool:
        """Stop the client.

        Returns:
            True when a socket is open: close it, and the stop completes in
            :meth:`socket_closed`. False when the client is now stopped.
        """
        if self._state is State.STOPPED:
            return False
        self._stopping = True
        if self._socket_open:
            return True
        self._finish_stop(None)
        return False

    def _recoverable(self, code: int | None) -> bool:
        return (
            self.codec.is_reliable and code != POLICY_VIOLATION and self._recovery_url() is not None
        )

    def _recovery_url(self) -> str | None:
        """The URL of the current connection plus its id and reconnection token (spec 4.7)."""
        if self._url is None or self._connection_id is None or not self._reconnection_token:
            return None
        parts = urlsplit(self._url)
        query = [
            (k, v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
            if k not in ("awps_connection_id", "awps_reconnection_token")
        ]
        query += [
            ("awps_connection_id", self._connection_id),
            ("awps_reconnection_token", self._reconnection_token),
        ]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def _connection_lost(self, code: int | None) -> None:
        """The logical connection is over: say so, then reconnect or stop."""
        self._events.append(
            DisconnectedEvent(self._connection_id, self._disconnected_message, code)
        )
        self._forget_connection()
        if self.options.auto_reconnect:
            self._failures = 0
            self._set_state(State.DISCONNECTED)
        else:
            self._stop_now()

    def _finish_stop(self, code: int | None) -> None:
        if self._state in (State.CONNECTED, State.RECOVERING):
            self._events.append(
                DisconnectedEvent(self._connection_id, self._disconnected_message, code)
            )
        self._stop_now()

    def _stop_now(self, *, announce: bool = True) -> None:
        if self._state is not State.STOPPED:
            self._set_state(State.STOPPED)
        self._stopping = False
        self._socket_open = False
        self._forget_connection()
        pending, self._pending = self._pending, {}
        self._deadlines.clear()
        self._rejoins.clear()
        self._announce_connected = False
        for ack_id, entry in pending.items():
            if not entry.rejoin:
                error = ClientStoppedError("The client stopped before the ack came.", ack_id)
                self._events.append(AckSettled(ack_id, None, error))
        if announce:
            self._events.append(StoppedEvent())

    def _forget_connection(self) -> None:
        self._url = None
        self._connection_id = None
        self._user_id = None
        self._reconnection_token = None
        self._disconnected_message = None
        self._sequence_id = self._acked_sequence_id = 0
        self._sequence_ack_at = None

    # -- incoming ---------------------------------------------------------------------------

    def receive(self, data: bytes | str, now: float) -> None:
        """One message from the socket (a text frame as str, a binary one as bytes)."""
        self._last_received = now
        try:
            message = self.codec.decode_downstream(data)
        except ProtocolViolation as exc:
            log.warning("ignored an invalid message from the service: %s", exc.message)
            return
        except Exception:  # a codec bug must not kill the connection's reader
            log.exception("could not decode a message from the service")
            return
        match message:
            case GroupMessage() | ServerMessage() | GroupStates():
                self._on_data(message, now)
            case Ack():
                self._on_ack(message)
            case Connected():
                self._on_connected(message, now)
            case Disconnected(reason):
                self._disconnected_message = reason
            case InvokeResponse() | StreamAnswer():
                self._events.append(message)  # the client settles its call or stream
            case Pong() | None:
                pass

    def _on_connected(self, message: Connected, now: float) -> None:
        if self._state is State.RECOVERING and message.connection_id == self._connection_id:
            # Same logical connection: no event; replays follow, and pending requests go
            # again with their ackIds (spec 4.7).
            log.info("recovered connection %s", self._connection_id)
            self._reconnection_token = message.reconnection_token
            self._failures = 0
            self._set_state(State.CONNECTED)
            # The last sequenceAck may have died with the socket: confirm again.
            self._acked_sequence_id = 0
            self._schedule_sequence_ack(now)
            self._send_pending()
            return
        if self._state is State.CONNECTED:
            self._reconnection_token = message.reconnection_token or self._reconnection_token
            return
        if self._state is not State.CONNECTING or self._stopping:
            log.debug("ignored a connected message while %s", self._state.value)
            return
        self._connection_id = message.connection_id
        self._user_id = message.user_id
        self._reconnection_token = message.reconnection_token
        self._disconnected_message = None
        self._sequence_id = self._acked_sequence_id = 0
        self._sequence_ack_at = None
        self._ever_connected = True
        self._failures = 0
        self._set_state(State.CONNECTED)
        log.info("connected as %s (user %s)", message.connection_id, message.user_id)
        # Rejoin first, then whatever was waiting, all in one go (the service handles one
        # connection's requests in order); `connected` is announced once rejoins are acked.
        for ack_id in self._rejoins:
            self._pending.pop(ack_id, None)
        self._rejoins.clear()
        if self.options.auto_rejoin_groups:
            for group in self._joined:
                ack_id = self.new_ack_id()
                entry = self._add(JoinGroup(group, ack_id), now, self.options.ack_timeout, True)
                entry.sent = True
                self._outgoing.append(entry.payload)
                self._rejoins.add(ack_id)
        for group in self._watched:
            # A new connection has no subscriptions: watch again (a snapshot follows). No
            # ackId: a refusal (the role is gone) is only the absence of events.
            self._outgoing.append(self.codec.encode_request(SubscribeGroupState(group)))
        self._announce_connected = True
        self._send_pending()
        self._maybe_announce_connected()

    def _maybe_announce_connected(self) -> None:
        if self._announce_connected and not self._rejoins and self._connection_id is not None:
            self._announce_connected = False
            self._events.append(ConnectedEvent(self._connection_id, self._user_id))

    def _on_ack(self, ack: Ack) -> None:
        entry = self._pending.pop(ack.ack_id, None)
        if entry is None:
            return  # late: the request timed out, or was answered on an earlier socket
        if ack.success or ack.is_duplicate:
            request = entry.request
            if isinstance(request, JoinGroup):
                self._joined[request.group] = None
            elif isinstance(request, LeaveGroup):
                self._joined.pop(request.group, None)
            elif isinstance(request, SubscribeGroupState):
                if request.subscribe:
                    self._watched[request.group] = None
                else:
                    self._watched.pop(request.group, None)
            self._settle(entry, AckResult(ack.ack_id, ack.is_duplicate), None)
        else:
            self._settle(entry, None, ack_error(ack.ack_id, ack.error))

    def _settle(
        self, entry: _Pending, result: AckResult | None, error: SendMessageError | None
    ) -> None:
        ack_id = entry.request.ack_id
        assert ack_id is not None
        if not entry.rejoin:
            self._events.append(AckSettled(ack_id, result, error))
            return
        self._rejoins.discard(ack_id)
        if error is not None:
            assert isinstance(entry.request, JoinGroup)
            log.warning("could not rejoin group %r: %s", entry.request.group, error)
            self._events.append(RejoinGroupFailedEvent(entry.request.group, error))
        self._maybe_announce_connected()

    def _on_data(self, message: GroupMessage | ServerMessage | GroupStates, now: float) -> None:
        sequence_id = message.sequence_id
        if sequence_id is not None and self.codec.is_reliable:
            if sequence_id <= self._sequence_id:
                # A replay after recovery, already delivered (spec 4.7: drop it).
                self._schedule_sequence_ack(now)
                return
            self._sequence_id = sequence_id
            self._schedule_sequence_ack(now)
        self._events.append(message)

    # -- sequence acks (spec 4.7) -------------------------------------------------------------

    def _schedule_sequence_ack(self, now: float) -> None:
        if self._sequence_id <= self._acked_sequence_id:
            return
        if self._sequence_id - self._acked_sequence_id >= QUICK_SEQUENCE_ACK:
            self._send_sequence_ack()
        elif self._sequence_ack_at is None:
            self._sequence_ack_at = now + self.options.sequence_ack_interval

    def _send_sequence_ack(self) -> None:
        self._sequence_ack_at = None
        if not self.can_send:
            return  # rescheduled when the connection is recovered
        self._outgoing.append(self.codec.encode_request(SequenceAck(self._sequence_id)))
        self._acked_sequence_id = self._sequence_id

    # -- operations -------------------------------------------------------------------------

    def new_ack_id(self) -> int:
        """The next free ackId (1, 2, ...; ids still waiting for an ack are skipped)."""
        while True:
            self._next_ack_id += 1
            if self._next_ack_id not in self._pending:
                return self._next_ack_id

    def track(self, request: AckedRequest, now: float, timeout: float | None) -> None:
        """Send ``request`` (now, or once connected) and wait for its ack.

        The outcome comes as :class:`AckSettled`: on the ack, after ``timeout`` seconds
        (:class:`SendTimeoutError`), or when the client stops (:class:`ClientStoppedError`).

        Raises:
            ValueError: the request has no ackId, or one that is still waiting.
            ClientStoppedError: the client is stopped.
        """
        ack_id = request.ack_id
        if ack_id is None:
            raise ValueError("a tracked request needs an ackId")
        if ack_id in self._pending:
            raise ValueError(f"ackId {ack_id} is still waiting for its ack")
        if self._state is State.STOPPED:
            raise ClientStoppedError("The client is not started.", ack_id)
        entry = self._add(request, now, timeout)
        if self.can_send:
            entry.sent = True
            self._outgoing.append(entry.payload)

    def _add(
        self, request: AckedRequest, now: float, timeout: float | None, rejoin: bool = False
    ) -> _Pending:
        ack_id = request.ack_id
        assert ack_id is not None
        deadline = None if timeout is None else now + timeout
        entry = _Pending(request, self.codec.encode_request(request), deadline, rejoin)
        self._pending[ack_id] = entry
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, ack_id))
        return entry

    def _send_pending(self) -> None:
        for entry in self._pending.values():
            if not entry.sent:
                entry.sent = True
                self._outgoing.append(entry.payload)

    def send_untracked(self, request: UntrackedRequest) -> bool:
        """Send a fire-and-forget request (no ackId) if connected.

        Returns:
            True when it went out; False when not connected (try again once connected).

        Raises:
            ClientStoppedError: the client is stopped.
        """
        if self._state is State.STOPPED:
            raise ClientStoppedError("The client is not started.")
        if not self.can_send:
            return False
        self._outgoing.append(self.codec.encode_request(request))
        return True

    def abandon(self, ack_id: int) -> None:
        """Forget a request whose caller stopped waiting (it is not sent again)."""
        self._pending.pop(ack_id, None)

    # -- timers -------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must run next (None: nothing scheduled)."""
        deadlines = self._deadlines
        while deadlines and not self._is_live(*deadlines[0]):
            heapq.heappop(deadlines)
        when = deadlines[0][0] if deadlines else None
        if self._socket_open:
            if self._state is State.CONNECTED:
                if self._sequence_ack_at is not None:
                    when = _earliest(when, self._sequence_ack_at)
                if self.options.keep_alive_interval > 0:
                    when = _earliest(when, self._next_ping())
            if self.options.keep_alive_timeout > 0 and not self._abort_requested:
                when = _earliest(when, self._last_received + self.options.keep_alive_timeout)
        return when

    def handle_timer(self, now: float) -> None:
        """Do what is due: expire acks, send the sequence ack and pings, spot a dead socket."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            deadline, ack_id = heapq.heappop(deadlines)
            if not self._is_live(deadline, ack_id):
                continue
            entry = self._pending.pop(ack_id)
            error = SendTimeoutError(f"No ack for ackId {ack_id} within the timeout.", ack_id)
            self._settle(entry, None, error)
        if not self._socket_open:
            return
        if self._state is State.CONNECTED:
            if self._sequence_ack_at is not None and self._sequence_ack_at <= now:
                self._send_sequence_ack()
            if self.options.keep_alive_interval > 0 and self._next_ping() <= now:
                self._outgoing.append(self.codec.encode_request(Ping()))
                self._last_ping = now
        timeout = self.options.keep_alive_timeout
        if timeout > 0 and not self._abort_requested and self._last_received + timeout <= now:
            # Spec 4.9: only message frames count; a half-open socket would hang forever.
            self._abort_requested = True
            self._events.append(AbortSocket(f"No message from the service for {timeout:g} s."))

    def _is_live(self, deadline: float, ack_id: int) -> bool:
        entry = self._pending.get(ack_id)
        return entry is not None and entry.deadline == deadline

    def _next_ping(self) -> float:
        # Ping when nothing came for an interval: the pong (or anything) proves the link.
        return max(self._last_received, self._last_ping) + self.options.keep_alive_interval

    # -- outputs --------------------------------------------------------------------------------

    def data_to_send(self) -> list[bytes]:
        """Frame payloads to write, in order (text frames for JSON, binary for protobuf)."""
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    def events_received(self) -> list[Event]:
        """Events since the last call, in order."""
        events, self._events = self._events, []
        return events


def _earliest(a: float | None, b: float) -> float:
    return b if a is None or b < a else a
