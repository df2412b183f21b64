"""The Python server SDK of Azure Web PubSub (and of ``webpubsub serve``).

``WebPubSubServiceClient`` here is synchronous; ``webpubsub.aio`` has the asyncio twin. Both
speak the REST contract of spec sections 1-3. Import from ``webpubsub`` / ``webpubsub.aio``
rather than from this package.
"""

from ._client import OnResponse, WebPubSubGroup, WebPubSubServiceClient
from ._connection_string import ConnectionString, parse_connection_string
from ._credentials import (
    AccessToken,
    AsyncTokenCredential,
    AzureKeyCredential,
    KeyCredential,
    TokenCredential,
)
from ._errors import (
    ClientAuthenticationError,
    ConnectionStringError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
    WebPubSubError,
)
from ._models import (
    ClientAccessToken,
    ClientProtocol,
    GroupMember,
    Headers,
    Permission,
    RawRequest,
    RawResponse,
)
from ._odata import odata, odata_literal
from ._retry import RetryPolicy

__all__ = [
    "AccessToken",
    "AsyncTokenCredential",
    "AzureKeyCredential",
    "ClientAccessToken",
    "ClientAuthenticationError",
    "ClientProtocol",
    "ConnectionString",
    "ConnectionStringError",
    "GroupMember",
    "Headers",
    "HttpResponseError",
    "KeyCredential",
    "OnResponse",
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
    "odata",
    "odata_literal",
    "parse_connection_string",
]
