"""Shared fixtures: one real service per test session on a free loopback port.

Tests isolate themselves by using their own hub (the ``hub`` fixture), so one service can
serve the whole session.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import pytest

from webpubsub.server.config import Settings
from webpubsub.testing import ServiceThread

ACCESS_KEY = "test-access-key-0123456789abcdefghijklmnopq"
SECONDARY_KEY = "test-secondary-key-0123456789abcdefghijklm"

_hub_counter = itertools.count(1)


@pytest.fixture(scope="session")
def service() -> Iterator[ServiceThread]:
    settings = Settings(port=0, access_keys=[ACCESS_KEY, SECONDARY_KEY])
    with ServiceThread(settings) as running:
        yield running


@pytest.fixture
def hub(request: pytest.FixtureRequest) -> str:
    """A hub name unique to this test (hubs isolate tests sharing one service)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", f"hub{next(_hub_counter)}_{request.node.name[:40]}")
