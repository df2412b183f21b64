"""The asyncio client: drives :class:`~webpubsub.client._core.ClientCore` over one
WebSocket at a time.

This layer only moves bytes and wakes waiters. It feeds the core what the socket reads,
writes what the core wants sent (from one writer task, so frames never interleave), calls
the core's timer when it asks, and turns the core's events into callbacks, stream items and
resolved futures. Every decision (recover or reconnect, resend, dedupe, time out) is the
core's.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import uuid
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Literal, Self, TypeAlias, overload

from ..core.message import DataType
from ..core.metadata import MetadataError, check_pairs
from ..core.requests import (
    CancelInvocation,
    Invoke,
    JoinGroup,
    LeaveGroup,
    SendEvent,
    SendToGroup,
    SetGroupState,
    StreamData,
    StreamEnd,
    StreamStart,
    SubscribeGroupState,
)
from ..protocols.downstream import (
    GroupMessage,
    GroupStates,
    InvokeResponse,
    Payload,
    ServerMessage,
    StreamAnswer,
    encode_payload,
)
from ._core import (
    DEFAULT_PROTOCOL,
    MAX_MESSAGE_SIZE,
    AbortSocket,
    AckedRequest,
    AckSettled,
    ClientCore,
    ClientOptions,
    Event,
    ReconnectPolicy,
    StartFailed,
    State,
    UntrackedRequest,
)
from ._errors import (
    ClientStoppedError,
    ConnectError,
    InvocationError,
    SendTimeoutError,
    WebPubSubClientError,
)
from ._events import (
    EVENT_TYPES,
    AckResult,
    ConnectedEvent,
    DisconnectedEvent,
    InvokeResult,
    RejoinGroupFailedEvent,
    StoppedEvent,
)
from ._stream import MessageStream
from ._streams import GroupStreamError, GroupStreams, GroupStreamWriter
from ._transport import Socket, SocketClosed, connect

log = logging.getLogger("webpubsub.client")

ClientCredential: TypeAlias = str | Callable[[], Awaitable[str]] | Callable[[], str]
"""A client access URL, or a callable (usually async) that returns a fresh one."""

OPEN_TIMEOUT = 10.0  # seconds for one WebSocket handshake
WRITE_HIGH_WATER = 1024 * 1024  # queued bytes above which fire-and-forget sends wait
FLUSH_ON_STOP = 2.0  # seconds stop() waits for queued frames before closing


class UseClientDefault(enum.Enum):
    """Type of :data:`USE_CLIENT_DEFAULT`."""

    USE_CLIENT_DEFAULT = "USE_CLIENT_DEFAULT"


USE_CLIENT_DEFAULT = UseClientDefault.USE_CLIENT_DEFAULT
"""Default of per-call ``timeout``: the client's ``ack_timeout`` (None means no limit)."""

Timeout: TypeAlias = float | UseClientDefault | None


class WebPubSubClient:
    """An asyncio client of the Web PubSub client protocols (spec 4).

    Connect, join groups, publish, and receive, with acks, recovery of dropped connections
    (reliable protocols), reconnection with backoff and automatic rejoin of groups::

        async with WebPubSubClient(url) as client:
            client.on("group-message", lambda m: print(m.from_user_id, m.data))
            await client.join_group("chat")
            await client.send_to_group("chat", "hello", "text")

    Args:
        credential: a client access URL (``ws://`` or ``wss://``, with ``access_token``), or
            a callable (usually ``async``) returning one; it is called for every new
            connection, so it can fetch a fresh token from the app server each time.
        protocol: the subprotocol: ``json.reliable.webpubsub.azure.v1`` (default),
            ``json.webpubsub.azure.v1``, ``protobuf.reliable.webpubsub.azure.v1`` or
            ``protobuf.webpubsub.azure.v1``. Reliable ones survive dropped connections.
        auto_reconnect: open a new connection when one is lost for good.
        auto_rejoin_groups: after a reconnect, rejoin the groups joined with
            :meth:`join_group` (failures fire ``rejoin-group-failed``).
        reconnect_policy: delays between reconnect attempts (exponential backoff).
        recovery_timeout: seconds a reliable client keeps trying to recover a dropped
            connection before it opens a new one (the service keeps it at least 30 s).
        recovery_delay: seconds between recovery attempts.
        ack_timeout: default seconds an operation waits for its ack (None: no limit).
        start_timeout: seconds :meth:`start` waits for the connection (None: no limit).
        keep_alive_interval: seconds of silence from the service after which the client
            sends a ``ping`` (0: never).
        keep_alive_timeout: seconds of silence after which the connection counts as dead
            and is dropped, then recovered or reopened (0: never).
        sequence_ack_interval: reliable protocols: seconds between batched sequence acks.
        max_message_size: largest message accepted from the service, in bytes (None: any).

    Raises:
        ValueError: an invalid URL, protocol or setting.
        TypeError: a credential that is neither a URL nor a callable.
    """

    def __init__(
        self,
        credential: ClientCredential,
        *,
        protocol: str = DEFAULT_PROTOCOL,
        auto_reconnect: bool = True,
        auto_rejoin_groups: bool = True,
        reconnect_policy: ReconnectPolicy | None = None,
        recovery_timeout: float = 30.0,
        recovery_delay: float = 1.0,
        ack_timeout: float | None = 30.0,
        start_timeout: float | None = 30.0,
        keep_alive_interval: float = 20.0,
        keep_alive_timeout: float = 120.0,
        sequence_ack_interval: float = 1.0,
        max_message_size: int | None = MAX_MESSAGE_SIZE,
    ) -> None:
        if isinstance(credential, str):
            _check_url(credential)
        elif not callable(credential):
            raise TypeError("credential must be a client access URL or a callable returning one")
        self._credential = credential
        self.options = ClientOptions(
            protocol=protocol,
            auto_reconnect=auto_reconnect,
            auto_rejoin_groups=auto_rejoin_groups,
            reconnect_policy=reconnect_policy or ReconnectPolicy(),
            recovery_timeout=recovery_timeout,
            recovery_delay=recovery_delay,
            ack_timeout=ack_timeout,
            start_timeout=start_timeout,
            keep_alive_interval=keep_alive_interval,
            keep_alive_timeout=keep_alive_timeout,
            sequence_ack_interval=sequence_ack_interval,
            max_message_size=max_message_size,
        )
        self._core = ClientCore(self.options)
        self._handlers: dict[str, list[Callable[[Any], object]]] = {n: [] for n in EVENT_TYPES}
        self._streams: weakref.WeakSet[MessageStream] = weakref.WeakSet()
        self._acks: dict[int, asyncio.Future[AckResult | None]] = {}
        self._invocations: dict[str, asyncio.Future[InvokeResponse]] = {}
        self._writers: dict[str, GroupStreamWriter] = {}
        self._group_streams: set[GroupStreams] = set()
        self._ready_waiters: set[asyncio.Future[None]] = set()
        self._handler_tasks: set[asyncio.Future[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._started: asyncio.Future[None] | None = None
        self._stopping: asyncio.Event | None = None
        self._socket: Socket | None = None
        self._writer: _Writer | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._in_after = False

    # -- properties ---------------------------------------------------------------------------

    @property
    def state(self) -> State:
        """Where the client is: stopped, connecting, connected, recovering, disconnected."""
        return self._core.state

    @property
    def is_connected(self) -> bool:
        """Whether requests go out now."""
        return self._core.can_send

    @property
    def connection_id(self) -> str | None:
        """The current connection's id (None before the first ``connected`` message)."""
        return self._core.connection_id

    @property
    def user_id(self) -> str | None:
        """The user the service assigned to the current connection."""
        return self._core.user_id

    @property
    def joined_groups(self) -> tuple[str, ...]:
        """The groups joined with :meth:`join_group` and not left (what gets rejoined)."""
        return self._core.joined_groups

    def __repr__(self) -> str:
        return (
            f"<WebPubSubClient {self._core.codec.subprotocol} {self.state.value}"
            f" connection_id={self.connection_id}>"
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect, and return once the service's ``connected`` message has arrived.

        The first connection is tried once: its failure is raised here. Once connected,
        the client recovers or reconnects on its own until :meth:`stop`.

        Raises:
            ConnectError: the handshake was refused (``status_code``, e.g. 401 for a bad
                token), the service closed the socket before ``connected`` (``close_code``),
                the credential failed, the network failed, or ``start_timeout`` passed.
            ClientStoppedError: :meth:`stop` was called before the client connected.
            RuntimeError: the client is already started.
        """
        if self._run_task is not None and not self._run_task.done():
            raise RuntimeError(f"The client is already started ({self.state.value}).")
        loop = self._loop = asyncio.get_running_loop()
        self._core.start()
        self._stopping = asyncio.Event()
        started = self._started = loop.create_future()
        self._run_task = loop.create_task(self._run(), name="webpubsub-client")
        timeout = self.options.start_timeout
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(started)
        except TimeoutError:
            await self.stop()
            raise ConnectError(f"Not connected within start_timeout ({timeout:g} s).") from None
        except WebPubSubClientError:
            await self._join_run_task()
            raise
        except asyncio.CancelledError:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Close the connection and stop; operations still waiting fail with
        :class:`ClientStoppedError`. Fires ``disconnected`` (if connected) and ``stopped``.

        Does nothing if the client is not started.
        """
        task = self._run_task
        if task is None or task.done():
            return
        assert self._stopping is not None
        self._stopping.set()
        must_close = self._core.stop()
        self._after_core()
        socket, writer = self._socket, self._writer
        if must_close and socket is not None:
            if writer is not None:
                await writer.flush(FLUSH_ON_STOP)
            await socket.close()
        elif not must_close:
            task.cancel()  # it may be waiting for a URL, a handshake or a retry delay
        await self._join_run_task()

    async def _join_run_task(self) -> None:
        if self._run_task is not None:
            await asyncio.wait({self._run_task})  # never cancels the task itself

    async def _run(self) -> None:
        """Connect, serve, and reconnect, until the core says stop."""
        core = self._core
        loop = asyncio.get_running_loop()
        try:
            while (attempt := core.next_attempt(loop.time())) is not None:
                self._after_core()
                if attempt.delay > 0:
                    await self._sleep(attempt.delay)
                if self._stopped():
                    break
                try:
                    url = attempt.url or await self._client_access_url()
                    socket = await connect(
                        url,
                        core.codec.subprotocol or "",
                        open_timeout=OPEN_TIMEOUT,
                        max_size=self.options.max_message_size,
                    )
                except ConnectError as exc:
                    if not self._stopped():
                        core.attempt_failed(exc, loop.time())
                    self._after_core()
                    continue
                if self._stopped():  # stop() while the handshake ran
                    await socket.close()
                    break
                await self._serve(socket, url)
        except asyncio.CancelledError:
            if not self._stopped():  # cancelled from outside (say, the loop shutting down)
                self._force_stop(loop.time())
                raise
            # else stop() cancelled a wait (URL, handshake, delay): the core is stopped
        except Exception:
            log.exception("the client loop failed; stopping")
            self._force_stop(loop.time())
        finally:
            self._after_core()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = self._timer_at = None

    def _stopped(self) -> bool:
        return self._core.state is State.STOPPED

    def _force_stop(self, now: float) -> None:
        """Stop the core without a closing handshake (the loop cannot carry on)."""
        if self._socket is not None:
            self._socket.abort()
        if self._core.stop():
            self._core.socket_closed(None, "", now)

    async def _serve(self, socket: Socket, url: str) -> None:
        """Read one socket until it closes, feeding the core."""
        core = self._core
        loop = asyncio.get_running_loop()
        self._socket = socket
        writer = self._writer = _Writer(socket, core.codec.text_frames)
        core.socket_opened(url, loop.time())
        self._after_core()
        try:
            while True:
                data = await socket.recv()
                core.receive(data, loop.time())
                self._after_core()
        except SocketClosed as closed:
            code, reason = closed.code, closed.reason
        except BaseException:
            socket.abort()
            raise
        finally:
            writer.close()
            self._socket = self._writer = None
        log.debug("socket closed: %s %s", code, reason)
        # As the official client: an invocation's answer comes on the socket that carried
        # it, or never (the service does not replay it after a recovery).
        outbound, self._writers = self._writers, {}
        for stream_id, stream_writer in outbound.items():
            stream_writer.fail(
                GroupStreamError("The connection dropped; the stream was cut off.", stream_id)
            )
        invocations, self._invocations = self._invocations, {}
        for invocation_id, future in invocations.items():
            if not future.done():
                future.set_exception(
                    InvocationError(
                        "The connection dropped before the invocation was answered.",
                        invocation_id,
                    )
                )
        core.socket_closed(code, reason, loop.time())
        self._after_core()

    async def _sleep(self, delay: float) -> None:
        assert self._stopping is not None
        try:
            async with asyncio.timeout(delay):
                await self._stopping.wait()
        except TimeoutError:
            pass

    async def _client_access_url(self) -> str:
        credential = self._credential
        if isinstance(credential, str):
            return credential
        try:
            result = credential()
            url = await result if inspect.isawaitable(result) else result
        except Exception as exc:
            raise ConnectError(f"Could not get a client access URL: {exc!r}") from exc
        if not isinstance(url, str):
            raise ConnectError(f"The credential returned a {type(url).__name__}, not a URL.")
        try:
            _check_url(url)
        except ValueError as exc:
            raise ConnectError(str(exc)) from None
        return url

    # -- the core's outputs ----------------------------------------------------------------------

    def _after_core(self) -> None:
        """Write what the core wants sent, act on its events, and re-arm its timer."""
        if self._in_after:
            return  # an outer call is draining the core and will pick this up
        self._in_after = True
        core = self._core
        try:
            while True:
                outgoing = core.data_to_send()
                events = core.events_received()
                if not outgoing and not events:
                    break
                writer = self._writer
                if writer is not None:
                    for payload in outgoing:
                        writer.write(payload)
                for event in events:
                    self._dispatch(event)
        finally:
            self._in_after = False
        self._rearm_timer()
        if core.can_send or core.state is State.STOPPED:
            for waiter in self._ready_waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def _rearm_timer(self) -> None:
        when = self._core.get_timer()
        if when == self._timer_at or self._loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = None if when is None else self._loop.call_at(when, self._on_timer, when)

    def _on_timer(self, when: float) -> None:
        assert self._loop is not None
        self._timer = self._timer_at = None
        # The loop may run a timer a clock tick early; the core must see it as due.
        self._core.handle_timer(max(self._loop.time(), when))
        self._after_core()

    def _dispatch(self, event: Event) -> None:
        match event:
            case AckSettled(ack_id, result, error):
                future = self._acks.pop(ack_id, None)
                if future is not None and not future.done():
                    if error is not None:
                        future.set_exception(error)
                    else:
                        future.set_result(result)
            case GroupMessage() | ServerMessage():
                for stream in list(self._streams):
                    stream.put(event)
                if isinstance(event, GroupMessage) and event.stream is not None:
                    for streams in list(self._group_streams):
                        streams.put(event)
                self._emit(
                    "group-message" if isinstance(event, GroupMessage) else "server-message", event
                )
            case GroupStates():
                self._emit("group-states-changed", event)
            case ConnectedEvent():
                self._resolve_start(None)
                self._emit("connected", event)
            case DisconnectedEvent():
                self._emit("disconnected", event)
            case RejoinGroupFailedEvent():
                self._emit("rejoin-group-failed", event)
            case StoppedEvent():
                self._resolve_start(ClientStoppedError("The client stopped before it connected."))
                for stream in list(self._streams):
                    stream.close()
                self._emit("stopped", event)
            case StreamAnswer(stream_id):
                writer = self._writers.get(stream_id)
                if writer is not None:
                    writer.answered(event)
                    if writer.closed:
                        del self._writers[stream_id]
            case InvokeResponse(invocation_id):
                call = self._invocations.pop(invocation_id, None)
                if call is not None and not call.done():
                    call.set_result(event)
            case StartFailed(error):
                self._resolve_start(error)
            case AbortSocket(reason):
                log.warning("dropping the connection: %s", reason)
                if self._socket is not None:
                    self._socket.abort()

    def _resolve_start(self, error: Exception | None) -> None:
        started = self._started
        if started is None or started.done():
            return
        if error is None:
            started.set_result(None)
        else:
            started.set_exception(error)

    # -- events ---------------------------------------------------------------------------------

    @overload
    def on(
        self, event: Literal["connected"], handler: Callable[[ConnectedEvent], object]
    ) -> None: ...
    @overload
    def on(
        self, event: Literal["disconnected"], handler: Callable[[DisconnectedEvent], object]
    ) -> None: ...
    @overload
    def on(self, event: Literal["stopped"], handler: Callable[[StoppedEvent], object]) -> None: ...
    @overload
    def on(
        self,
        event: Literal["group-message", "group_message"],
        handler: Callable[[GroupMessage], object],
    ) -> None: ...
    @overload
    def on(
        self,
        event: Literal["server-message", "server_message"],
        handler: Callable[[ServerMessage], object],
    ) -> None: ...
    @overload
    def on(
        self,
        event: Literal["rejoin-group-failed", "rejoin_group_failed"],
        handler: Callable[[RejoinGroupFailedEvent], object],
    ) -> None: ...
    @overload
    def on(
        self,
        event: Literal["group-states-changed", "group_states_changed"],
        handler: Callable[[GroupStates], object],
    ) -> None: ...
    def on(self, event: str, handler: Callable[[Any], object]) -> None:
        """Call ``handler`` with every event of a kind.

        Events, as the JS client names them (``_`` works for ``-``), and what the handler
        gets: ``connected`` (:class:`ConnectedEvent`), ``disconnected``
        (:class:`DisconnectedEvent`), ``stopped`` (:class:`StoppedEvent`),
        ``group-message`` (:class:`GroupMessage`), ``server-message``
        (:class:`ServerMessage`), ``rejoin-group-failed`` (:class:`RejoinGroupFailedEvent`),
        ``group-states-changed`` (:class:`GroupStates`: a snapshot or an update of a group
        this client subscribed to with :meth:`subscribe_group_state`).

        A plain function runs at once, in order, on the client's reader: keep it short. A
        coroutine function runs as its own task, so it may await operations of this client.
        Exceptions are logged, never raised into the client.

        Args:
            event: the event's name.
            handler: a function or coroutine function taking the event.

        Raises:
            ValueError: an unknown event name.
        """
        self._handlers[_event_name(event)].append(handler)

    def off(self, event: str, handler: Callable[[Any], object]) -> None:
        """Remove a handler added with :meth:`on` (nothing happens if it is not there).

        Raises:
            ValueError: an unknown event name.
        """
        handlers = self._handlers[_event_name(event)]
        if handler in handlers:
            handlers.remove(handler)

    def _emit(self, name: str, event: object) -> None:
        for handler in list(self._handlers[name]):
            try:
                result = handler(event)
            except Exception:
                log.exception("the %s handler %r failed", name, handler)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._handler_tasks.add(task)
                task.add_done_callback(self._handler_done)

    def _handler_done(self, task: asyncio.Future[Any]) -> None:
        self._handler_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("an event handler failed", exc_info=task.exception())

    def messages(self, *, maxsize: int = 1000) -> MessageStream:
        """An async iterator over the group and server messages received from now on.

        Each call makes an independent stream. It ends when the client stops, and is closed
        with :class:`MessageStreamOverflow` if ``maxsize`` messages pile up unread (the
        client never waits for a slow reader). Use ``async with`` or :meth:`close
        <MessageStream.close>` to stop receiving early::

            async with client.messages() as stream:
                async for message in stream:
                    ...

        Args:
            maxsize: unread messages the stream may hold.

        Returns:
            The stream.

        Raises:
            ValueError: ``maxsize`` below 1.
        """
        stream = MessageStream(maxsize, self._streams.discard)
        self._streams.add(stream)
        return stream

    # -- operations -----------------------------------------------------------------------------

    async def join_group(
        self, group: str, *, ack_id: int | None = None, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> AckResult:
        """Join a group (needs the ``webpubsub.joinLeaveGroup[.<group>]`` role).

        Waits while the client is reconnecting; the request is sent again with the same
        ackId after a dropped connection.

        Args:
            group: the group's name.
            ack_id: the ackId to use (default: the client's next one).
            timeout: seconds to wait for the ack (default ``ack_timeout``; None: no limit).

        Returns:
            The ack's outcome.

        Raises:
            Forbidden: the connection may not join the group.
            InvalidMessage: the group name is invalid.
            SendTimeoutError: no ack in time.
            ClientStoppedError: the client is (or got) stopped.
            ValueError: ``ack_id`` is still waiting for its ack.
        """
        return await self._send_acked(lambda a: JoinGroup(group, a), ack_id, timeout)

    async def set_group_state(
        self,
        group: str,
        state: Mapping[str, str] | None,
        *,
        ack_id: int | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> AckResult:
        """Set this connection's state in a group it is a member of (spec-next 5); None
        clears it. Subscribers of the group get it in ``group-states-changed``.

        Raises:
            InvalidMessage: not a member, or a state that is not a small string map.
            SendTimeoutError: no ack in time.
            ClientStoppedError: the client is (or got) stopped.
        """
        value = dict(state) if state is not None else None
        return await self._send_acked(lambda a: SetGroupState(group, value, a), ack_id, timeout)

    async def subscribe_group_state(
        self, group: str, *, ack_id: int | None = None, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> AckResult:
        """Watch a group's states (the ``webpubsub.joinLeaveGroup[.<group>]`` role): a
        snapshot, then every change, arrive as ``group-states-changed`` events.

        Raises:
            Forbidden: the connection may not watch the group.
            SendTimeoutError: no ack in time.
            ClientStoppedError: the client is (or got) stopped.
        """
        return await self._send_acked(lambda a: SubscribeGroupState(group, a), ack_id, timeout)

    async def unsubscribe_group_state(
        self, group: str, *, ack_id: int | None = None, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> AckResult:
        """Stop watching a group's states."""
        return await self._send_acked(
            lambda a: SubscribeGroupState(group, a, subscribe=False), ack_id, timeout
        )

    async def leave_group(
        self, group: str, *, ack_id: int | None = None, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> AckResult:
        """Leave a group (needs the ``webpubsub.joinLeaveGroup[.<group>]`` role).

        Args:
            group: the group's name.
            ack_id: the ackId to use (default: the client's next one).
            timeout: seconds to wait for the ack (default ``ack_timeout``; None: no limit).

        Returns:
            The ack's outcome.

        Raises:
            Forbidden: the connection may not leave the group.
            InvalidMessage: the group name is invalid.
            SendTimeoutError: no ack in time.
            ClientStoppedError: the client is (or got) stopped.
            ValueError: ``ack_id`` is still waiting for its ack.
        """
        return await self._send_acked(lambda a: LeaveGroup(group, a), ack_id, timeout)

    async def send_to_group(
        self,
        group: str,
        data: Payload,
        data_type: DataType | str,
        *,
        no_echo: bool = False,
        metadata: Mapping[str, str] | None = None,
        ttl_seconds: int = 0,
        fire_and_forget: bool = False,
        ack_id: int | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> AckResult:
        """Publish to a group (needs ``webpubsub.sendToGroup[.<group>]``; membership is not
        required).

        Args:
            group: the group's name.
            data: a JSON value (``json``), ``str`` (``text``), bytes (``binary``), or a
                protobuf message or serialized ``Any`` (``protobuf``).
            data_type: ``json``, ``text``, ``binary`` or ``protobuf``.
            no_echo: do not deliver the message to this connection.
            metadata: string pairs that travel with the message (receivers see them as
                ``metadata``; keys as given).
            ttl_seconds: drop the message for receivers that do not get it within this
                many seconds (1..300; 0: never).
            fire_and_forget: send without an ackId and return once it is written: no
                ack, no retry, so it can be lost with a dropped connection.
            ack_id: the ackId to use (default: the client's next one).
            timeout: seconds to wait for the ack, or with ``fire_and_forget`` for a
                connection (default ``ack_timeout``; None: no limit).

        Returns:
            The ack's outcome (``ack_id`` None for fire-and-forget).

        Raises:
            Forbidden: the connection may not publish to the group.
            InvalidMessage: the group name is invalid.
            SendTimeoutError: no ack (or no connection) in time.
            ClientStoppedError: the client is (or got) stopped.
            TypeError: ``data`` does not fit ``data_type``.
            ValueError: an unknown ``data_type``, data that is not valid for it, an
                ``ack_id`` still waiting, or an ``ack_id`` with ``fire_and_forget``.
        """
        kind = DataType(data_type)
        payload = encode_payload(data, kind)
        meta = _metadata(metadata)
        if type(ttl_seconds) is not int or not 0 <= ttl_seconds <= 300:
            raise ValueError("ttl_seconds must be an int from 0 to 300")
        if fire_and_forget:
            _no_ack_id(ack_id)
            request = SendToGroup(group, payload, kind, None, no_echo, meta, ttl_seconds)
            await self._send_untracked(request, timeout)
            return AckResult(None)
        return await self._send_acked(
            lambda a: SendToGroup(group, payload, kind, a, no_echo, meta, ttl_seconds),
            ack_id,
            timeout,
        )

    async def send_event(
        self,
        event: str,
        data: Payload,
        data_type: DataType | str,
        *,
        metadata: Mapping[str, str] | None = None,
        fire_and_forget: bool = False,
        ack_id: int | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> AckResult:
        """Send a user event to the hub's event handler (spec 5.8).

        The ack comes once the handler answered; a reply body it sends arrives first, as
        a ``server-message``.

        Args:
            event: the event's name (the upstream ``ce-eventName``).
            data: the payload, as for :meth:`send_to_group`.
            data_type: ``json``, ``text``, ``binary`` or ``protobuf``.
            metadata: string pairs for the handler (``X-WebPubSub-Metadata-*`` headers).
            fire_and_forget: send without an ackId (see :meth:`send_to_group`).
            ack_id: the ackId to use (default: the client's next one).
            timeout: seconds to wait for the ack (default ``ack_timeout``; None: no limit).

        Returns:
            The ack's outcome (``ack_id`` None for fire-and-forget).

        Raises:
            InternalServerError: no event handler took the event, or it failed.
            SendTimeoutError: no ack (or no connection) in time.
            ClientStoppedError: the client is (or got) stopped.
            TypeError: ``data`` does not fit ``data_type``.
            ValueError: as for :meth:`send_to_group`.
        """
        kind = DataType(data_type)
        payload = encode_payload(data, kind)
        meta = _metadata(metadata)
        if fire_and_forget:
            _no_ack_id(ack_id)
            await self._send_untracked(SendEvent(event, payload, kind, None, meta), timeout)
            return AckResult(None)
        return await self._send_acked(
            lambda a: SendEvent(event, payload, kind, a, meta), ack_id, timeout
        )

    async def invoke_event(
        self,
        event: str,
        data: Payload = None,
        data_type: DataType | str | None = None,
        *,
        metadata: Mapping[str, str] | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> InvokeResult:
        """Call the hub's event handler for ``event`` and wait for its answer (spec-next 1),
        as ``invokeEvent`` of the official JS client.

        The handler sees an ordinary user event; what it answers comes back here (its body,
        or an error). Over every subprotocol (protobuf: spec-next 8).

        Args:
            event: the event's name.
            data: the payload, as for :meth:`send_to_group`; None with ``data_type`` None
                sends none.
            data_type: ``json``, ``text``, ``binary`` or ``protobuf`` (None: no payload).
            metadata: string pairs for the handler (``X-WebPubSub-Metadata-*`` headers).
            timeout: seconds to wait for the answer (default ``ack_timeout``; None: no
                limit, the service's own timeout still answers). On timeout the client sends
                ``cancelInvocation``.

        Returns:
            The handler's answer.

        Raises:
            InvocationError: the service or the handler answered an error (``name``), the
                connection dropped before the answer, or no answer in time (``Timeout``).
            ClientStoppedError: the client is (or got) stopped.
            ValueError: bad metadata, or data that does not fit.
        """
        core = self._core
        if self._loop is None or core.state is State.STOPPED:
            raise ClientStoppedError("The client is not started.")
        kind = DataType(data_type) if data_type is not None else None
        payload = encode_payload(data, kind) if kind is not None else b""
        invocation_id = uuid.uuid4().hex
        request = Invoke(invocation_id, event, payload, kind, _metadata(metadata))
        seconds = self._timeout(timeout)
        future: asyncio.Future[InvokeResponse] = self._loop.create_future()
        self._invocations[invocation_id] = future
        try:
            async with asyncio.timeout(seconds):
                await self._send_untracked(request, None)
                response = await future
        except TimeoutError:
            self._invocations.pop(invocation_id, None)
            with contextlib.suppress(WebPubSubClientError):
                self._core.send_untracked(CancelInvocation(invocation_id))
                self._after_core()
            raise InvocationError(
                f"No answer within {seconds:g} s; the invocation was cancelled.",
                invocation_id,
                "Timeout",
            ) from None
        finally:
            self._invocations.pop(invocation_id, None)
        if not response.success:
            error = response.error
            raise InvocationError(
                error.message if error else "The invocation failed.",
                invocation_id,
                error.name if error else "",
            )
        return InvokeResult(invocation_id, response.data, response.data_type, response.metadata)

    async def open_group_stream(
        self,
        group: str,
        *,
        stream_id: str | None = None,
        no_echo: bool = False,
        idle_timeout_ms: int | None = None,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> GroupStreamWriter:
        """Open a group stream (spec-next 2), as ``openGroupStream`` of the official JS
        client: returns once the service acknowledged it. Over every subprotocol.

        Args:
            group: the group that receives the stream (the ``sendToGroup`` role for it).
            stream_id: the stream's id (default: a new UUID).
            no_echo: do not send the fragments back to this connection.
            idle_timeout_ms: the service ends the stream after this long without a
                fragment (default 300,000).
            timeout: seconds to wait for the service to open it.

        Raises:
            GroupStreamError: refused (``Forbidden``, ``BadRequest``) or not answered in time.
            ValueError: the stream id is already open here.
        """
        stream_id = stream_id or str(uuid.uuid4())
        if stream_id in self._writers:
            raise ValueError(f"The stream '{stream_id}' is already open.")

        async def send(request: StreamData | StreamEnd) -> None:
            await self._send_untracked(request, timeout)

        writer = GroupStreamWriter(stream_id, group, send)
        self._writers[stream_id] = writer
        seconds = self._timeout(timeout)
        try:
            async with asyncio.timeout(seconds):
                await self._send_untracked(
                    StreamStart(group, stream_id, no_echo, idle_timeout_ms), None
                )
                await writer.opened()
        except TimeoutError:
            self._writers.pop(stream_id, None)
            raise GroupStreamError(
                f"The service did not open the stream within {seconds:g} s.", stream_id, "Timeout"
            ) from None
        except GroupStreamError:
            self._writers.pop(stream_id, None)
            raise
        return writer

    def group_streams(self, *groups: str) -> GroupStreams:
        """An async iterator of the group streams others send to this connection's groups
        (those named, or all), from now on; each :class:`GroupStream` is an async iterator
        of its fragments, raising :class:`GroupStreamError` if the stream failed. Call its
        ``close()`` to stop receiving."""
        streams = GroupStreams(set(groups) or None, self._group_streams.discard)
        self._group_streams.add(streams)
        return streams

    def _timeout(self, timeout: Timeout) -> float | None:
        return self.options.ack_timeout if isinstance(timeout, UseClientDefault) else timeout

    async def _send_acked(
        self, make: Callable[[int], AckedRequest], ack_id: int | None, timeout: Timeout
    ) -> AckResult:
        core = self._core
        if core.state is State.STOPPED or self._loop is None:
            raise ClientStoppedError("The client is not started.", ack_id)
        if ack_id is None:
            ack_id = core.new_ack_id()
        future: asyncio.Future[AckResult | None] = self._loop.create_future()
        core.track(make(ack_id), self._loop.time(), self._timeout(timeout))
        self._acks[ack_id] = future
        self._after_core()
        try:
            result = await future
        except asyncio.CancelledError:
            core.abandon(ack_id)
            self._acks.pop(ack_id, None)
            raise
        assert result is not None
        return result

    async def _send_untracked(self, request: UntrackedRequest, timeout: Timeout) -> None:
        core = self._core
        if core.state is State.STOPPED or self._loop is None:
            raise ClientStoppedError("The client is not started.")
        seconds = self._timeout(timeout)
        deadline = None if seconds is None else self._loop.time() + seconds
        while not core.send_untracked(request):  # raises ClientStoppedError once stopped
            try:
                async with asyncio.timeout_at(deadline):
                    await self._wait_ready()
            except TimeoutError:
                raise SendTimeoutError(
                    "Not connected within the timeout; the message was not sent."
                ) from None
        writer = self._writer
        self._after_core()
        if writer is not None:
            await writer.wait_writable()

    async def _wait_ready(self) -> None:
        """Until the client can send, or is stopped."""
        if self._core.can_send or self._core.state is State.STOPPED:
            return
        assert self._loop is not None
        waiter = self._loop.create_future()
        self._ready_waiters.add(waiter)
        try:
            await waiter
        finally:
            self._ready_waiters.discard(waiter)


class _Writer:
    """Writes frame payloads to one socket, in order, from one task."""

    def __init__(self, socket: Socket, text: bool) -> None:
        self._socket = socket
        self._text = text
        self._queue: deque[bytes] = deque()
        self._size = 0
        self._wakeup = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task = asyncio.get_running_loop().create_task(self._run())

    def write(self, payload: bytes) -> None:
        self._queue.append(payload)
        self._size += len(payload)
        self._idle.clear()
        if self._size > WRITE_HIGH_WATER:
            self._writable.clear()
        self._wakeup.set()

    async def _run(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._queue:
                    payload = self._queue.popleft()
                    await self._socket.send(payload, text=self._text)
                    self._size -= len(payload)
                    if self._size <= WRITE_HIGH_WATER // 2:
                        self._writable.set()
                self._idle.set()
        except SocketClosed:
            pass  # the reader sees the close too, and reports it
        except Exception:
            log.exception("writing to the socket failed; dropping it")
            self._socket.abort()
        finally:
            self._release()

    def _release(self) -> None:
        self._queue.clear()
        self._size = 0
        self._writable.set()
        self._idle.set()

    async def wait_writable(self) -> None:
        """Until the queue is below its high-water mark (or the socket is gone)."""
        await self._writable.wait()

    async def flush(self, timeout: float) -> None:
        """Until everything queued is written, for at most ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            pass

    def close(self) -> None:
        self._task.cancel()
        self._release()


def _check_url(url: str) -> None:
    if not url.startswith(("ws://", "wss://")):
        scheme = url.partition(":")[0][:10]
        raise ValueError(
            f"A client access URL starts with ws:// or wss://, not {scheme!r}: use the 'url' "
            "of get_client_access_token()."
        )


def _event_name(event: str) -> str:
    name = event.replace("_", "-")
    if name not in EVENT_TYPES:
        raise ValueError(f"unknown event {event!r} (known: {', '.join(EVENT_TYPES)})")
    return name


def _no_ack_id(ack_id: int | None) -> None:
    if ack_id is not None:
        raise ValueError("a fire-and-forget send carries no ackId")


def _metadata(metadata: Mapping[str, str] | None) -> dict[str, str] | None:
    """Metadata checked against the service's rules before it is sent."""
    if metadata is None:
        return None
    try:
        return check_pairs(metadata.items())
    except MetadataError as exc:
        raise ValueError(f"invalid metadata: {exc}") from None
