"""The public surface: pinned so that additions and removals are deliberate."""

from __future__ import annotations

import webpubsub
import webpubsub.aio


def test_webpubsub_all() -> None:
    assert webpubsub.__all__ == [
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
    for name in webpubsub.__all__:
        assert getattr(webpubsub, name) is not None


def test_aio_all() -> None:
    assert webpubsub.aio.__all__ == [
        "AsyncOnResponse",
        "AsyncTokenCredential",
        "WebPubSubGroup",
        "WebPubSubServiceClient",
    ]
    for name in webpubsub.aio.__all__:
        assert getattr(webpubsub.aio, name) is not None
    assert webpubsub.aio.WebPubSubServiceClient.__module__.endswith("_async_client")


def test_public_api_is_documented() -> None:
    classes = [
        webpubsub.WebPubSubServiceClient,
        webpubsub.WebPubSubGroup,
        webpubsub.aio.WebPubSubServiceClient,
        webpubsub.aio.WebPubSubGroup,
        webpubsub.AzureKeyCredential,
        webpubsub.RetryPolicy,
        webpubsub.RawResponse,
        webpubsub.HttpResponseError,
    ]
    for cls in classes:
        assert cls.__doc__, cls
        for name, member in vars(cls).items():
            if name.startswith("_") or not callable(member):
                continue
            doc = member.__doc__ or ""
            assert doc.strip(), f"{cls.__name__}.{name} has no docstring"
    for name in ("odata", "parse_connection_string"):
        assert "Args:" in getattr(webpubsub, name).__doc__


def test_sync_and_async_clients_offer_the_same_calls() -> None:
    def public(cls: type) -> set[str]:
        return {n for n in dir(cls) if not n.startswith("_")}

    assert public(webpubsub.WebPubSubServiceClient) == public(webpubsub.aio.WebPubSubServiceClient)
    assert public(webpubsub.WebPubSubGroup) == public(webpubsub.aio.WebPubSubGroup)


def test_errors_share_the_project_base() -> None:
    from webpubsub.core.errors import WebPubSubError

    assert webpubsub.WebPubSubError is WebPubSubError
    for name in (
        "ConnectionStringError",
        "HttpResponseError",
        "ClientAuthenticationError",
        "ResourceNotFoundError",
        "ServiceRequestError",
        "ServiceResponseError",
    ):
        assert issubclass(getattr(webpubsub, name), WebPubSubError)
    assert issubclass(webpubsub.ConnectionStringError, ValueError)
