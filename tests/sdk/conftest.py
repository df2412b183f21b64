"""Fixtures of the SDK tests: clients of both flavours against the session's real service,
and a recording server for wire-level checks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import webpubsub
import webpubsub.aio
from webpubsub.sdk import _logging
from webpubsub.testing import ServiceThread

from .helpers import Recorder, SyncAsAsync

FAST_RETRY = webpubsub.RetryPolicy(max_retries=3, backoff_factor=0.001, backoff_max=0.01)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder().start()
    yield rec
    rec.stop()


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which client flavour a test body drives."""
    return str(request.param)


class ClientFactory:
    """Builds clients of one flavour, wrapped so tests ``await`` every call; closes them."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._open: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("retry", FAST_RETRY)
        cls = (
            webpubsub.WebPubSubServiceClient
            if self.kind == "sync"
            else webpubsub.aio.WebPubSubServiceClient
        )
        if len(args) == 1 and isinstance(args[0], str) and "=" in args[0]:
            client = cls.from_connection_string(args[0], **kwargs)
        else:
            client = cls(*args, **kwargs)
        self._open.append(client)
        return SyncAsAsync(client) if self.kind == "sync" else client

    async def aclose(self) -> None:
        for client in self._open:
            if self.kind == "sync":
                client.close()
            else:
                await client.close()


@pytest.fixture
async def make_client(kind: str) -> AsyncIterator[ClientFactory]:
    factory = ClientFactory(kind)
    yield factory
    await factory.aclose()


@pytest.fixture
async def client(make_client: ClientFactory, service: ServiceThread, hub: str) -> Any:
    """A client of the test's flavour on the test's own hub of the real service."""
    return make_client(service.connection_string, hub=hub)


@pytest.fixture
def sdk_logs() -> Iterator[None]:
    """Restore the SDK logger after a test changed its level or handlers."""
    logger = logging.getLogger("webpubsub.sdk")
    level, handlers = logger.level, list(logger.handlers)
    yield
    logger.setLevel(level)
    for handler in list(logger.handlers):
        if handler not in handlers:
            logger.removeHandler(handler)
    _logging._handler = None
