"""Fixtures of the event handler tests: one shared uvicorn server the tests install apps on."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.handler.helpers import ASGIServerThread


@pytest.fixture(scope="session")
def asgi_server() -> Iterator[ASGIServerThread]:
    with ASGIServerThread() as server:
        yield server
