"""Observers: what the service does, told to metrics, live trace and logs.

The node and the server call one :class:`Observer`; :class:`Observers` fans the calls out to
the registered ones. With none registered, each call is a method call on an empty list.
Calls happen once per connection event, per client message, per send command (not per
recipient), per REST call and per upstream call, so observing stays off the fan-out loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .commands import Command
    from .connection import Connection
    from .requests import ClientRequest


class Observer:
    """Base observer: every hook does nothing; override the ones you need."""

    def connection_opened(self, conn: Connection, peer: str) -> None:
        """A client connection was accepted and registered."""

    def connection_closed(self, conn: Connection, reason: str) -> None:
        """A logical connection ended (for reliable ones: after recovery gave up)."""

    def connection_moved(self, conn: Connection, arrived: bool) -> None:
        """A reliable connection went on through another node (``arrived`` False: it left
        this one; True: it came here). Neither opened nor closed: the same connection."""

    def request_received(self, conn: Connection, request: ClientRequest, size: int) -> None:
        """A client sent a message of ``size`` bytes that decoded to ``request``."""

    def command_applied(self, hub: str, command: Command, recipients: int) -> None:
        """A command reached ``recipients`` local connections (sends: the fan-out size)."""

    def rest_call(
        self, method: str, path: str, operation: str, status: int, seconds: float
    ) -> None:
        """A REST call was answered."""

    def upstream_call(
        self, hub: str, event: str, url: str, status: int | None, seconds: float, error: str | None
    ) -> None:
        """An event handler call finished (``status`` None when it failed without answer)."""

    def slow_consumer(self, conn: Connection, buffered: int) -> None:
        """A connection was cut because ``buffered`` bytes waited to be written."""

    def invocation_done(self, conn: Connection, event: str, outcome: str, seconds: float) -> None:
        """An ``invoke`` was answered: ``outcome`` is ``success`` or the error's name
        (``Timeout``, ``NotFound``, ``Throttled``...), ``cancelled`` when the client gave up."""

    def stream_changed(
        self, conn: Connection, group: str, stream_id: str, opened: bool, error: str | None
    ) -> None:
        """A group stream of ``conn`` opened, or ended (``error``: the name it ended with,
        None for a normal end)."""


class Observers(Observer):
    """Calls every registered observer, in order. Observers must not raise: they run on the
    service's hot paths (connections, messages), so a failing one would fail those."""

    def __init__(self) -> None:
        self._observers: list[Observer] = []

    def add(self, observer: Observer) -> None:
        self._observers.append(observer)

    def remove(self, observer: Observer) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def __bool__(self) -> bool:
        return bool(self._observers)

    def connection_opened(self, conn: Connection, peer: str) -> None:
        for observer in self._observers:
            observer.connection_opened(conn, peer)

    def connection_closed(self, conn: Connection, reason: str) -> None:
        for observer in self._observers:
            observer.connection_closed(conn, reason)

    def connection_moved(self, conn: Connection, arrived: bool) -> None:
        for observer in self._observers:
            observer.connection_moved(conn, arrived)

    def invocation_done(self, conn: Connection, event: str, outcome: str, seconds: float) -> None:
        for observer in self._observers:
            observer.invocation_done(conn, event, outcome, seconds)

    def stream_changed(
        self, conn: Connection, group: str, stream_id: str, opened: bool, error: str | None
    ) -> None:
        for observer in self._observers:
            observer.stream_changed(conn, group, stream_id, opened, error)

    def request_received(self, conn: Connection, request: ClientRequest, size: int) -> None:
        for observer in self._observers:
            observer.request_received(conn, request, size)

    def command_applied(self, hub: str, command: Command, recipients: int) -> None:
        for observer in self._observers:
            observer.command_applied(hub, command, recipients)

    def rest_call(
        self, method: str, path: str, operation: str, status: int, seconds: float
    ) -> None:
        for observer in self._observers:
            observer.rest_call(method, path, operation, status, seconds)

    def upstream_call(
        self, hub: str, event: str, url: str, status: int | None, seconds: float, error: str | None
    ) -> None:
        for observer in self._observers:
            observer.upstream_call(hub, event, url, status, seconds, error)

    def slow_consumer(self, conn: Connection, buffered: int) -> None:
        for observer in self._observers:
            observer.slow_consumer(conn, buffered)
