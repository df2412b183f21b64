"""The asyncio client: broadcast, send to a group and check it, with `webpubsub.aio`.

Same calls as the synchronous samples, awaited.
"""

from __future__ import annotations

import asyncio

from sample_settings import HUB, Listener, connection_string

from webpubsub.aio import WebPubSubServiceClient


async def main() -> None:
    async with WebPubSubServiceClient.from_connection_string(
        connection_string(), hub=HUB
    ) as client:
        token = await client.get_client_access_token(user_id="user1")
        # The sample listener is synchronous; run it off the event loop.
        listener = await asyncio.to_thread(Listener, token["url"])

        await client.send_to_all({"message": "Hello world!"})
        await client.send_to_all("Hi there!", content_type="text/plain")
        group_client = client.group("async-group")
        await group_client.add_user("user1")
        await group_client.send_to_all(bytes(10))
        async for member in group_client.list_connections():
            print("async-group member:", member.user_id)
        print("async-group exists:", await client.group_exists("async-group"))

        await asyncio.to_thread(listener.show, 3)
        listener.close()


if __name__ == "__main__":
    asyncio.run(main())
