"""Fixtures of the client tests: clients of the session's service, stopped after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.client.helpers import ALL_ROLES, access_url
from webpubsub.client import WebPubSubClient
from webpubsub.testing import ServiceThread

Connect = Callable[..., Awaitable[WebPubSubClient]]


@pytest.fixture
async def connect(service: ServiceThread, hub: str) -> AsyncIterator[Connect]:
    """``await connect("bob", roles=..., protocol=..., start=True, **options)``: a client of
    the test's hub, started unless ``start=False``; every one is stopped at teardown."""
    clients: list[WebPubSubClient] = []

    async def make(
        user_id: str | None = "alice",
        *,
        roles: tuple[str, ...] = ALL_ROLES,
        start: bool = True,
        **options: Any,
    ) -> WebPubSubClient:
        client = WebPubSubClient(access_url(service, hub, user_id, roles), **options)
        clients.append(client)
        if start:
            await client.start()
        return client

    yield make
    for client in clients:
        await client.stop()
