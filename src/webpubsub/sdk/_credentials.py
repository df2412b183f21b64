"""Credentials: an access key (signs a JWT per request) or an Entra ID token source.

The SDK takes any object that looks like one of the protocols below, so credentials from
``azure-core`` / ``azure-identity`` work unchanged when the user has them installed; neither
package is needed otherwise.
"""

from __future__ import annotations

import threading
import time
from typing import NamedTuple, Protocol, runtime_checkable

__all__ = [
    "ENTRA_SCOPE",
    "AccessToken",
    "AccessTokenLike",
    "AsyncTokenCredential",
    "AzureKeyCredential",
    "KeyCredential",
    "TokenCredential",
]

ENTRA_SCOPE = "https://webpubsub.azure.com/.default"
"""The scope requested from token credentials (spec 2.3)."""

REFRESH_MARGIN_SECONDS = 300
"""Fetch a new Entra token this long before the cached one expires."""


class AzureKeyCredential:
    """An access key that can be replaced while clients use it (key rotation).

    Example::

        credential = AzureKeyCredential(primary_key)
        client = WebPubSubServiceClient(endpoint, credential, hub="chat")
        credential.update(secondary_key)  # the next request is signed with the new key

    Args:
        key: the access key as shown in the portal / printed by ``webpubsub serve``.

    Raises:
        TypeError: when ``key`` is not a string.
        ValueError: when ``key`` is empty.
    """

    __slots__ = ("_key",)

    def __init__(self, key: str) -> None:
        self._key = _check_key(key)

    @property
    def key(self) -> str:
        """The current key."""
        return self._key

    def update(self, key: str) -> None:
        """Replace the key; requests signed after this call use the new one.

        Args:
            key: the new access key.

        Raises:
            TypeError: when ``key`` is not a string.
            ValueError: when ``key`` is empty.
        """
        self._key = _check_key(key)

    def __repr__(self) -> str:
        return "AzureKeyCredential(key=<redacted>)"


def _check_key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"The access key must be a string, not {type(key).__name__}.")
    if not key:
        raise ValueError("The access key must not be empty.")
    return key


@runtime_checkable
class KeyCredential(Protocol):
    """Anything with a ``key`` string: :class:`AzureKeyCredential` or azure-core's."""

    @property
    def key(self) -> str: ...


class AccessTokenLike(Protocol):
    """What ``get_token`` returns: a bearer token and its expiry (epoch seconds)."""

    @property
    def token(self) -> str: ...

    @property
    def expires_on(self) -> int: ...


class AccessToken(NamedTuple):
    """An Entra ID access token (same shape as ``azure.core.credentials.AccessToken``)."""

    token: str
    expires_on: int


@runtime_checkable
class TokenCredential(Protocol):
    """A source of Entra ID tokens, such as ``azure.identity.DefaultAzureCredential``.

    The client calls ``get_token("https://webpubsub.azure.com/.default")`` and caches the
    result until five minutes before ``expires_on``.
    """

    def get_token(self, *scopes: str) -> AccessTokenLike: ...


class AsyncTokenCredential(Protocol):
    """The asyncio flavour of :class:`TokenCredential` (``azure.identity.aio``)."""

    async def get_token(self, *scopes: str) -> AccessTokenLike: ...


class TokenCache:
    """The current Entra token, refreshed :data:`REFRESH_MARGIN_SECONDS` before it expires."""

    def __init__(self) -> None:
        self._token: str | None = None
        self._expires_on = 0.0
        self.lock = threading.Lock()

    def current(self, now: float | None = None) -> str | None:
        """The cached token when it is still fresh enough to send, else None."""
        now = time.time() if now is None else now
        if self._token is not None and now < self._expires_on - REFRESH_MARGIN_SECONDS:
            return self._token
        return None

    def store(self, access_token: AccessTokenLike) -> str:
        """Keep a token fetched from the credential and return its string."""
        token = access_token.token
        if not isinstance(token, str) or not token:
            raise TypeError("get_token() must return an object with a non-empty 'token' string.")
        self._token = token
        self._expires_on = float(access_token.expires_on)
        return token
