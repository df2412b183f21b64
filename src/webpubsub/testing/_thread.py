from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from ..server.app import Service
from ..server.config import Settings

T = TypeVar("T")


class ServiceThread:
    """A service on its own event loop in a daemon thread.

    Example::

        with ServiceThread() as service:
            client = WebPubSubServiceClient.from_connection_string(
                service.connection_string, hub="chat")
    """

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        settings = settings or Settings(port=0)
        for key, value in overrides.items():
            setattr(settings, key, value)
        self.service = Service(settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def settings(self) -> Settings:
        return self.service.settings

    @property
    def endpoint(self) -> str:
        return self.service.endpoint

    @property
    def connection_string(self) -> str:
        return self.service.connection_string

    @property
    def access_key(self) -> str:
        return self.settings.access_keys[0]

    def start(self) -> ServiceThread:
        started: Future[None] = Future()

        def run() -> None:
            try:
                import uvloop

                loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            except ImportError:  # pragma: no cover
                loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.service.start())
            except BaseException as exc:
                started.set_exception(exc)
                return
            started.set_result(None)
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name="webpubsub-service", daemon=True)
        self._thread.start()
        started.result(timeout=10)
        return self

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the service's loop and return its result (to inspect state safely)."""
        assert self._loop is not None
        result: Future[T] = Future()

        def run() -> None:
            try:
                result.set_result(fn())
            except BaseException as exc:
                result.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return result.result(timeout=10)

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop = None

    async def _shutdown(self) -> None:
        """Stop the service, then cancel what is still running (e.g. a live trace stream
        whose client left a moment ago), so no task is destroyed while pending."""
        await self.service.stop()
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> ServiceThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
