"""The asyncio server SDK: the same calls as ``webpubsub.WebPubSubServiceClient``, awaited.

Example::

    from webpubsub.aio import WebPubSubServiceClient

    async with WebPubSubServiceClient.from_connection_string(conn_str, hub="chat") as client:
        await client.send_to_all({"message": "Hello world!"})

Credentials, errors, models and helpers are shared with the sync SDK and imported from
``webpubsub``.
"""

from ..sdk._async_client import AsyncOnResponse, WebPubSubGroup, WebPubSubServiceClient
from ..sdk._credentials import AsyncTokenCredential

__all__ = ["AsyncOnResponse", "AsyncTokenCredential", "WebPubSubGroup", "WebPubSubServiceClient"]
