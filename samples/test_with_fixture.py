"""Testing your own app against a real service with the ``webpubsub`` pytest plugin.

The app code below (normally imported from your package) tells shoppers, live, when their
order ships and announces sales to everyone browsing the shop. The tests run it against a
real service started in the test process, with recording WebSocket clients standing in for
the shoppers' browsers. Nothing is mocked, nothing sleeps.

Run it with ``pip install webpubsub pytest pytest-asyncio`` and::

    pytest samples/test_with_fixture.py

The plugin is registered when ``webpubsub`` is installed (entry point ``pytest11``); in a
checkout without the installed entry point add ``-p webpubsub.testing.plugin``.
"""

from __future__ import annotations

import pytest

from webpubsub import WebPubSubServiceClient
from webpubsub.testing import AckError, ClientFactory, ServerMessage

# -- the app code under test ------------------------------------------------------------------

SHOPPERS = "shoppers"


class ShopNotifier:
    """Pushes shop news to browsers through Web PubSub."""

    def __init__(self, service: WebPubSubServiceClient) -> None:
        self.service = service

    def order_shipped(self, user_id: str, order_id: str, carrier: str) -> None:
        """Tell one shopper (every tab they have open) that their order left the warehouse."""
        self.service.send_to_user(
            user_id, {"type": "orderShipped", "orderId": order_id, "carrier": carrier}
        )

    def announce_sale(self, percent: int) -> None:
        """Tell everyone browsing the shop about a sale."""
        self.service.group(SHOPPERS).send_to_all(
            f"Everything is {percent}% off!", content_type="text/plain"
        )

    def browser_token(self, user_id: str) -> str:
        """The URL a shopper's browser connects with: in the shoppers group, read-only."""
        token = self.service.get_client_access_token(user_id=user_id, groups=[SHOPPERS])
        return token["url"]


# -- the tests ----------------------------------------------------------------------------------


@pytest.fixture
def notifier(webpubsub_service_client: WebPubSubServiceClient) -> ShopNotifier:
    """The app object, wired to the test service (fixture from the webpubsub plugin)."""
    return ShopNotifier(webpubsub_service_client)


@pytest.mark.asyncio
async def test_the_shopper_hears_about_their_order(
    notifier: ShopNotifier, webpubsub_client_factory: ClientFactory
) -> None:
    alice_phone = await webpubsub_client_factory.connect(user_id="alice")
    alice_laptop = await webpubsub_client_factory.connect(user_id="alice")
    bob = await webpubsub_client_factory.connect(user_id="bob")

    notifier.order_shipped("alice", "A-1001", "DHL")
    notifier.order_shipped("bob", "B-2002", "UPS")

    expected = {"type": "orderShipped", "orderId": "A-1001", "carrier": "DHL"}
    for tab in (alice_phone, alice_laptop):
        message = await tab.receive(timeout=5)
        assert isinstance(message, ServerMessage)
        assert message.data == expected
    # Bob's first message is his own order: Alice's never reached him (order is kept).
    assert (await bob.receive()).data["orderId"] == "B-2002"


@pytest.mark.asyncio
async def test_a_sale_reaches_every_browser_in_the_shop(
    notifier: ShopNotifier, webpubsub_client_factory: ClientFactory
) -> None:
    # Connect the way the app's own pages do: with the URL the app hands out.
    browsers = [
        await webpubsub_client_factory.connect(url=notifier.browser_token(user))
        for user in ("carol", "dave")
    ]

    notifier.announce_sale(30)

    for browser in browsers:
        assert await browser.receive_data() == "Everything is 30% off!"


@pytest.mark.asyncio
async def test_browsers_cannot_talk_to_each_other(
    notifier: ShopNotifier, webpubsub_client_factory: ClientFactory
) -> None:
    browser = await webpubsub_client_factory.connect(url=notifier.browser_token("eve"))
    with pytest.raises(AckError) as refused:
        await browser.send_to_group(SHOPPERS, "spam")
    assert refused.value.name == "Forbidden"
