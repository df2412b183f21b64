"""``/healthz`` and ``/readyz`` over real HTTP."""

from __future__ import annotations

import asyncio

import httpx

from webpubsub.server.app import Service
from webpubsub.server.config import Settings
from webpubsub.server.http import HttpRequest
from webpubsub.testing import ServiceThread


def test_healthz(service: ServiceThread) -> None:
    response = httpx.get(f"{service.endpoint}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert httpx.head(f"{service.endpoint}/healthz").status_code == 200
    assert httpx.post(f"{service.endpoint}/healthz").status_code == 405


def test_readyz_when_serving(service: ServiceThread) -> None:
    response = httpx.get(f"{service.endpoint}/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "reason": "ok", "cluster": "disabled"}
    assert response.headers["cache-control"] == "no-store"


async def test_readyz_is_503_once_stopping() -> None:
    """A load balancer must stop sending traffic as soon as shutdown begins."""
    service = Service(Settings(port=0))
    await service.start()
    readyz = service.pages["/readyz"]
    request = HttpRequest("GET", "/readyz", [])
    assert (await readyz(request)).status == 200
    stopping = asyncio.ensure_future(service.stop())
    await asyncio.sleep(0)  # let stop() close the listening socket (its first step)
    answer = await readyz(request)
    await stopping
    assert answer.status == 503
    assert b'"unready"' in answer.body
