"""Refusals of ``invokeEvent`` as the official ``@azure/web-pubsub-client`` 1.1.0 sees them
(spec-next 1.6): every refusal is an ``invokeResponse`` with an error, never silence (the JS
client has no timeout of its own and would wait forever)."""

from __future__ import annotations

import pytest

from webpubsub.testing import ServiceThread

from .test_js_sdk import Clients

pytestmark = pytest.mark.usefixtures("js_service")


def test_no_handler_then_throttled(clients: Clients, service: ServiceThread) -> None:
    node = service.service.node
    saved = (node.message_rate, node.message_burst)

    def set_rate(rate: float | None, burst: int) -> None:
        node.message_rate, node.message_burst = rate, burst

    service.call(lambda: set_rate(0.001, 1))  # one message, then one per 1,000 s
    try:
        clients.start("a", user_id="alice")
    finally:
        service.call(lambda: set_rate(*saved))
    missing = clients.error("a", "invokeEvent", "nobody", "x", "text")
    assert missing.error["errorDetail"]["name"] == "NotFound"
    throttled = clients.error("a", "invokeEvent", "nobody", "x", "text")
    detail = throttled.error["errorDetail"]
    assert detail["name"] == "Throttled" and "Too many messages" in detail["message"]
