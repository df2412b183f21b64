"""The ``webpubsub`` pytest plugin: a real service per test, and clients to drive it.

Installed with the package (entry point ``pytest11``), so these fixtures are available in
any test suite of a project that has ``webpubsub`` installed:

==================================  ===========================================================
``webpubsub_settings``              :class:`~webpubsub.server.config.Settings` for the service;
                                    override it to add event handlers or anonymous hubs
``webpubsub_service``               a started :class:`~webpubsub.testing.ServiceThread` on a
                                    free loopback port (one per test)
``webpubsub_connection_string``     its connection string
``webpubsub_hub``                   the hub the clients below use (``"hub"``; override it)
``webpubsub_service_client``        a sync :class:`webpubsub.WebPubSubServiceClient` for it
``webpubsub_async_service_client``  the asyncio twin (``webpubsub.aio``)
``webpubsub_client_factory``        a :class:`~webpubsub.testing.ClientFactory`: ``await
                                    factory.connect(user_id=...)`` gives a connected
                                    :class:`~webpubsub.testing.RecordingClient`
==================================  ===========================================================

The asyncio fixtures need ``pytest-asyncio``; without it they fail with a message saying so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from ..aio import WebPubSubServiceClient as AsyncWebPubSubServiceClient
from ..sdk import WebPubSubServiceClient
from ..server.config import Settings
from ._client import ClientFactory
from ._thread import ServiceThread

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised only without pytest-asyncio
    pytest_asyncio = None  # type: ignore[assignment]

__all__ = [
    "webpubsub_async_service_client",
    "webpubsub_client_factory",
    "webpubsub_connection_string",
    "webpubsub_hub",
    "webpubsub_service",
    "webpubsub_service_client",
    "webpubsub_settings",
]

_NEEDS_ASYNCIO = "the webpubsub asyncio fixtures need pytest-asyncio: pip install pytest-asyncio"


@pytest.fixture
def webpubsub_settings() -> Settings:
    """Settings of the test service: a free loopback port and a random access key.

    Override this fixture to configure hubs, e.g.::

        @pytest.fixture
        def webpubsub_settings():
            return Settings(port=0, hubs={"*": simple_hub_settings(MY_HANDLER_URL, False)})
    """
    return Settings(port=0)


@pytest.fixture
def webpubsub_service(webpubsub_settings: Settings) -> Iterator[ServiceThread]:
    """A complete service running in this process (its own thread and event loop)."""
    with ServiceThread(webpubsub_settings) as service:
        yield service


@pytest.fixture
def webpubsub_connection_string(webpubsub_service: ServiceThread) -> str:
    """``Endpoint=http://127.0.0.1:<port>;AccessKey=<key>;Version=1.0;`` of the service."""
    return webpubsub_service.connection_string


@pytest.fixture
def webpubsub_hub() -> str:
    """The hub the service client and the client factory use by default."""
    return "hub"


@pytest.fixture
def webpubsub_service_client(
    webpubsub_connection_string: str, webpubsub_hub: str
) -> Iterator[WebPubSubServiceClient]:
    """The project's synchronous server SDK, pointed at the test service and hub."""
    client = WebPubSubServiceClient.from_connection_string(
        webpubsub_connection_string, hub=webpubsub_hub
    )
    with client:
        yield client


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def webpubsub_async_service_client(
        webpubsub_connection_string: str, webpubsub_hub: str
    ) -> AsyncIterator[AsyncWebPubSubServiceClient]:
        """The asyncio server SDK (``webpubsub.aio``), pointed at the test service and hub."""
        client = AsyncWebPubSubServiceClient.from_connection_string(
            webpubsub_connection_string, hub=webpubsub_hub
        )
        async with client:
            yield client

    @pytest_asyncio.fixture
    async def webpubsub_client_factory(
        webpubsub_connection_string: str, webpubsub_hub: str
    ) -> AsyncIterator[ClientFactory]:
        """Connects recording clients (``await factory.connect(...)``); closes them after."""
        async with ClientFactory(webpubsub_connection_string, webpubsub_hub) as factory:
            yield factory

else:  # pragma: no cover - exercised only without pytest-asyncio

    @pytest.fixture
    def webpubsub_async_service_client() -> Any:
        pytest.fail(_NEEDS_ASYNCIO)

    @pytest.fixture
    def webpubsub_client_factory() -> Any:
        pytest.fail(_NEEDS_ASYNCIO)
