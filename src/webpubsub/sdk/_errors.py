"""Errors the SDK raises, all below ``webpubsub.WebPubSubError``.

    WebPubSubError
    ├── ConnectionStringError      a connection string that cannot be parsed (also a ValueError)
    ├── HttpResponseError          the service answered with an error status
    │   ├── ClientAuthenticationError   401 or 403: bad key, expired token, missing RBAC role
    │   └── ResourceNotFoundError       404 on a call that cannot answer "no" (e.g. add_user)
    ├── ServiceRequestError        the request never reached the service (DNS, refused, TLS,
    │                              connect timeout); always safe to retry
    └── ServiceResponseError       the request went out but no complete response came back
                                   (connection reset, read timeout)

httpx exceptions never cross the public API: :func:`map_transport_error` translates them at
the transport seam (``raise ... from exc`` keeps the original for debugging).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx

from ..core.errors import WebPubSubError

if TYPE_CHECKING:
    from ._models import RawResponse

__all__ = [
    "ClientAuthenticationError",
    "ConnectionStringError",
    "HttpResponseError",
    "ResourceNotFoundError",
    "ServiceRequestError",
    "ServiceResponseError",
    "WebPubSubError",
]


class ConnectionStringError(WebPubSubError, ValueError):
    """A connection string is malformed or lacks ``Endpoint`` / ``AccessKey`` (spec 2.2).

    The message names the problem but never repeats the string, which holds a secret.
    """


class HttpResponseError(WebPubSubError):
    """The service answered with a status the operation does not accept.

    Attributes:
        status_code: the HTTP status (e.g. 400, 401, 404, 429, 500).
        error_code: the service's error code, from the ``x-ms-error-code`` header or the
            ``code`` of the ``ErrorDetail`` body (e.g. ``Error.Connection.NotExisted``);
            None when the service sent neither.
        message: the service's explanation (``message`` of the body, or the body text).
        response: the raw response (status, headers, body).
    """

    def __init__(self, response: RawResponse, message: str | None = None) -> None:
        detail = _error_detail(response)
        self.response = response
        self.status_code = response.status_code
        header_code = response.headers.get("x-ms-error-code")
        body_code = detail.get("code")
        self.error_code: str | None = header_code or (
            body_code if isinstance(body_code, str) else None
        )
        body_message = detail.get("message")
        if message is None:
            if isinstance(body_message, str) and body_message:
                message = body_message
            else:
                text = response.text.strip()
                message = text[:500] if text else (response.reason_phrase or "")
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        code = f"({self.error_code}) " if self.error_code else ""
        return f"{code}{self.message} (status {self.status_code})".strip()


class ClientAuthenticationError(HttpResponseError):
    """401 or 403: the key, token or role assignment does not allow the call."""


class ResourceNotFoundError(HttpResponseError):
    """404 on an operation where "not found" is an error (adding an unknown connection)."""


class ServiceRequestError(WebPubSubError):
    """The request could not be sent: the service was unreachable or the connect timed out."""


class ServiceResponseError(WebPubSubError):
    """The request was sent but no complete response arrived (reset, read timeout)."""


def error_for(response: RawResponse) -> HttpResponseError:
    """The most specific :class:`HttpResponseError` for an error response."""
    if response.status_code in (401, 403):
        return ClientAuthenticationError(response)
    if response.status_code == 404:
        return ResourceNotFoundError(response)
    return HttpResponseError(response)


def map_transport_error(exc: httpx.HTTPError) -> ServiceRequestError | ServiceResponseError:
    """Translate an httpx error into ours (the seam of style point 6)."""
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return ServiceRequestError(f"Timed out connecting to the service: {exc}")
    if isinstance(exc, httpx.ConnectError | httpx.UnsupportedProtocol | httpx.ProxyError):
        return ServiceRequestError(f"Cannot reach the service: {exc}")
    if isinstance(exc, httpx.TimeoutException):
        return ServiceResponseError(f"Timed out waiting for the service: {exc}")
    return ServiceResponseError(f"The connection to the service failed: {exc}")


def _error_detail(response: RawResponse) -> dict[str, Any]:
    """The ``ErrorDetail`` JSON body (spec 1.1), or an empty dict for any other body."""
    if not response.body or "json" not in response.headers.get("content-type", "json"):
        return {}
    try:
        parsed = json.loads(response.body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    if isinstance(parsed, dict):
        inner = parsed.get("error")
        # Some gateways wrap the detail as {"error": {...}}; accept both shapes.
        if isinstance(inner, dict) and "code" not in parsed:
            return inner
        return parsed
    return {}
