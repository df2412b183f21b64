"""webpubsub: a self-hosted service wire-compatible with Azure Web PubSub, and its SDK.

The server SDK lives here (synchronous) and in ``webpubsub.aio`` (asyncio)::

    from webpubsub import WebPubSubServiceClient

    client = WebPubSubServiceClient.from_connection_string(conn_str, hub="chat")
    client.send_to_all({"message": "Hello world!"})
"""

__version__ = "0.1.0"

from .sdk import (
    AccessToken,
    AzureKeyCredential,
    ClientAccessToken,
    ClientAuthenticationError,
    ClientProtocol,
    ConnectionStringError,
    GroupMember,
    HttpResponseError,
    Permission,
    RawRequest,
    RawResponse,
    ResourceNotFoundError,
    RetryPolicy,
    ServiceRequestError,
    ServiceResponseError,
    TokenCredential,
    WebPubSubError,
    WebPubSubGroup,
    WebPubSubServiceClient,
    odata,
    parse_connection_string,
)

__all__ = [
    "AccessToken",
    "AzureKeyCredential",
    "ClientAccessToken",
    "ClientAuthenticationError",
    "ClientProtocol",
    "ConnectionStringError",
    "GroupMember",
    "HttpResponseError",
    "Permission",
    "RawRequest",
    "RawResponse",
    "ResourceNotFoundError",
    "RetryPolicy",
    "ServiceRequestError",
    "ServiceResponseError",
    "TokenCredential",
    "WebPubSubError",
    "WebPubSubGroup",
    "WebPubSubServiceClient",
    "__version__",
    "odata",
    "parse_connection_string",
]
