"""An async iterator over the messages a client receives, with a bounded buffer.

Policy when the reader falls behind: the client never waits for a stream (it would stop
reading acks too, and a reader that awaits an operation would wait forever), so a stream
that holds ``maxsize`` unread messages is closed instead. Its reader first gets everything
buffered, then :class:`~webpubsub.client.MessageStreamOverflow`. Callbacks are unaffected.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Self

from ..protocols.downstream import GroupMessage, ServerMessage
from ._errors import MessageStreamOverflow

Message = GroupMessage | ServerMessage


class MessageStream:
    """Messages (group and server) in the order they arrived; see
    :meth:`~webpubsub.client.WebPubSubClient.messages`.

    Iterate with ``async for``; the iteration ends when the client stops (or the stream is
    closed) and raises :class:`~webpubsub.client.MessageStreamOverflow` after an overflow.
    Use it as an ``async with`` block, or call :meth:`close`, to stop receiving.
    """

    def __init__(self, maxsize: int, on_close: Callable[[MessageStream], None]) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self._on_close = on_close
        self._buffer: deque[Message] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._error: Exception | None = None

    @property
    def closed(self) -> bool:
        """Whether the stream takes no more messages (it may still hold some to read)."""
        return self._closed

    def __len__(self) -> int:
        """Messages received and not read yet."""
        return len(self._buffer)

    def put(self, message: Message) -> None:
        """Add a message (the client calls this); closes the stream on overflow."""
        if self._closed:
            return
        if len(self._buffer) >= self.maxsize:
            self._end(
                MessageStreamOverflow(
                    f"The message stream fell {self.maxsize} messages behind and was closed."
                )
            )
            return
        self._buffer.append(message)
        self._wake()

    def close(self) -> None:
        """Stop receiving; the messages already buffered can still be read."""
        self._end(None)

    def _end(self, error: Exception | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._error = error
        self._on_close(self)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Message:
        while not self._buffer:
            if self._closed:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._buffer.popleft()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<MessageStream {state} {len(self._buffer)}/{self.maxsize}>"
