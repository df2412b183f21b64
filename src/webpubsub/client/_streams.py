"""Group streams on the client (spec-next 2): writing one, and reading the ones others send.

:class:`GroupStreamWriter` is what ``openGroupStream`` returns in the official JS client:
``write``, ``end``, ``abort``. Inbound fragments arrive as group messages with ``stream``
set; :class:`GroupStreams` sorts them into one :class:`GroupStream` per (group, stream id),
each an async iterator of its fragments that ends with the stream, or raises
:class:`GroupStreamError` when the stream failed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Self

from ..core.message import DataType
from ..core.requests import StreamData, StreamEnd
from ..protocols.downstream import GroupMessage, Payload, StreamAnswer, encode_payload
from ._errors import WebPubSubClientError


class GroupStreamError(WebPubSubClientError):
    """A group stream failed: refused at the start (``Forbidden``, ``BadRequest``), closed
    by the service (``IdleTimeout``, ``StreamNotFound``...), aborted by its publisher
    (``UserError``, with ``user_error_code``), or cut off by a dropped connection."""

    def __init__(
        self, message: str, stream_id: str, name: str = "", user_error_code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.stream_id = stream_id
        self.name = name
        self.user_error_code = user_error_code

    def __str__(self) -> str:
        named = f"{self.name}: " if self.name else ""
        return f"{named}{self.message} (stream {self.stream_id})"


Send = Callable[[StreamData | StreamEnd], Awaitable[None]]


class GroupStreamWriter:
    """One outbound stream to a group; made by ``WebPubSubClient.open_group_stream``."""

    def __init__(self, stream_id: str, group: str, send: Send) -> None:
        self.stream_id = stream_id
        self.group = group
        self._send = send
        self._next = 1
        self._opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.acknowledged = 0  # the service has every fragment up to this one

    @property
    def closed(self) -> bool:
        return self._closed.done()

    async def write(self, data: Payload, data_type: DataType | str) -> None:
        """Send one fragment (returns once it is queued on the socket).

        Raises:
            GroupStreamError: the stream is closed (the error it closed with, if any).
        """
        self._check_open()
        kind = DataType(data_type)
        sequence_id, self._next = self._next, self._next + 1
        await self._send(StreamData(self.stream_id, sequence_id, encode_payload(data, kind), kind))

    async def end(self) -> None:
        """End the stream; returns once the service closed it."""
        self._check_open()
        await self._send(StreamEnd(self.stream_id))
        await asyncio.shield(self._closed)

    async def abort(self, message: str = "", user_error_code: str | None = None) -> None:
        """End the stream with an error: readers get ``UserError`` with these."""
        self._check_open()
        await self._send(StreamEnd(self.stream_id, (message, user_error_code)))
        await asyncio.shield(self._closed)

    async def wait_closed(self) -> None:
        """Until the service closed the stream; raises the error it closed with, if any."""
        await asyncio.shield(self._closed)

    def _check_open(self) -> None:
        if self._closed.done():
            error = self._closed.exception()
            if error is not None:
                raise error
            raise GroupStreamError("The stream is closed.", self.stream_id, "StreamClosed")

    # -- from the client ------------------------------------------------------------------

    def answered(self, answer: StreamAnswer) -> None:
        if answer.closed:
            error = None
            if answer.error is not None:
                error = GroupStreamError(answer.error.message, self.stream_id, answer.error.name)
            self.fail(error)
            return
        if answer.expected is not None:
            self.acknowledged = max(self.acknowledged, answer.expected - 1)
            if not self._opened.done():
                self._opened.set_result(None)

    def fail(self, error: GroupStreamError | None) -> None:
        """Closed: by the service (``error`` None when normally), or the connection."""
        for future in (self._opened, self._closed):
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
                    future.exception()  # retrieved: nobody may be waiting for both

    async def opened(self) -> None:
        await asyncio.shield(self._opened)
        if self._closed.done() and self._closed.exception() is not None:
            raise self._closed.exception()  # type: ignore[misc]


class GroupStream:
    """One inbound stream: an async iterator of its fragments (group messages)."""

    def __init__(self, group: str, stream_id: str, from_user_id: str | None) -> None:
        self.group = group
        self.stream_id = stream_id
        self.from_user_id = from_user_id
        self._items: asyncio.Queue[GroupMessage | GroupStreamError | None] = asyncio.Queue()

    def _put(self, message: GroupMessage) -> bool:
        """Take a fragment; True once the stream ended."""
        stream = message.stream
        assert stream is not None
        if not stream.end:
            self._items.put_nowait(message)
            return False
        if message.data not in ("", None, b""):
            self._items.put_nowait(message)
        if stream.error is None:
            self._items.put_nowait(None)
        else:
            name, text, code = stream.error
            self._items.put_nowait(GroupStreamError(text, self.stream_id, name, code))
        return True

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> GroupMessage:
        item = await self._items.get()
        if item is None:
            self._items.put_nowait(None)  # stays ended
            raise StopAsyncIteration
        if isinstance(item, GroupStreamError):
            self._items.put_nowait(item)
            raise item
        return item


class GroupStreams:
    """The inbound streams of a client, in the order they started: an async iterator of
    :class:`GroupStream`; made by ``WebPubSubClient.group_streams``."""

    def __init__(self, groups: set[str] | None, on_close: Callable[[GroupStreams], None]) -> None:
        self._groups = groups
        self._on_close = on_close
        self._open: dict[tuple[str, str], GroupStream] = {}
        self._new: asyncio.Queue[GroupStream | None] = asyncio.Queue()

    def put(self, message: GroupMessage) -> None:
        stream = message.stream
        if stream is None or (self._groups is not None and message.group not in self._groups):
            return
        key = (message.group, stream.stream_id)
        current = self._open.get(key)
        if current is None:
            current = self._open[key] = GroupStream(*key, message.from_user_id)
            self._new.put_nowait(current)
        if current._put(message):
            del self._open[key]

    def close(self) -> None:
        self._new.put_nowait(None)
        self._on_close(self)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> GroupStream:
        stream = await self._new.get()
        if stream is None:
            self._new.put_nowait(None)
            raise StopAsyncIteration
        return stream
