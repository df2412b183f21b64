"""Errors of the routing core, each carrying what the wire needs.

    WebPubSubError
    ├── RequestError            a REST call or handshake the service refuses (HTTP status + code)
    │   ├── BadRequest          400: invalid parameter, filter, body
    │   ├── Unauthorized        401: missing or invalid token
    │   ├── NotFound            404: unknown connection/user on a PUT
    │   ├── PayloadTooLarge     413: body above the message limit
    │   ├── UnsupportedMediaType 415: content type the service cannot map to a data type
    │   ├── TooManyRequests     429: a quota is reached (client connections of a hub)
    │   └── ServiceUnavailable  503: this node cannot serve now (full, stopping, Redis down)
    ├── ClientError             a client message the service refuses (ack error name)
    │   ├── Forbidden           the connection lacks the permission
    │   ├── Duplicate           the ackId was already processed
    │   ├── InvalidMessage      a well-formed request with a bad argument (ack "BadRequest")
    │   ├── Throttled           the connection sends faster than its message rate
    │   └── InternalServerError no upstream could take a user event
    ├── InvalidRequest          a codec's "bad argument" (becomes InvalidMessage when acked)
    └── ProtocolViolation       a frame that is no message of the subprotocol (close code)

REST errors are rendered by the server as an ``ErrorDetail`` body plus ``x-ms-error-code``
(spec 1.1); client errors become ``ack`` messages with ``error.name`` (spec 4.4/4.5).
"""

from __future__ import annotations


class WebPubSubError(Exception):
    """Base class of every error raised by webpubsub."""


class RequestError(WebPubSubError):
    """A request the service answers with an HTTP error status."""

    status = 500
    default_code = "Error.InternalServerError"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        target: str | None = None,
        status: int | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.target = target
        if status is not None:
            self.status = status


class BadRequest(RequestError):
    status = 400
    default_code = "Error.BadRequest"


class Unauthorized(RequestError):
    status = 401
    default_code = "Error.Unauthorized"


class NotFound(RequestError):
    status = 404
    default_code = "Error.NotFound"


class MethodNotAllowed(RequestError):
    status = 405
    default_code = "Error.MethodNotAllowed"


class PayloadTooLarge(RequestError):
    status = 413
    default_code = "Error.PayloadTooLarge"


class UnsupportedMediaType(RequestError):
    status = 415
    default_code = "Error.UnsupportedMediaType"


class TooManyRequests(RequestError):
    status = 429
    default_code = "Error.TooManyRequests"


class ServiceUnavailable(RequestError):
    status = 503
    default_code = "Error.ServiceUnavailable"


class ClientError(WebPubSubError):
    """A client request refused with an ack error (``error.name`` on the wire)."""

    name = "InternalServerError"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Forbidden(ClientError):
    name = "Forbidden"


class Duplicate(ClientError):
    name = "Duplicate"


class InvalidMessage(ClientError):
    name = "BadRequest"


class Throttled(ClientError):
    """Raised for a request over the connection's message rate; not executed, not recorded
    as processed, so the client may retry it with the same ackId."""

    name = "Throttled"


class InternalServerError(ClientError):
    name = "InternalServerError"


class InvalidRequest(WebPubSubError):
    """A well-formed request with a bad argument: acked with ``BadRequest`` when it has an ackId.

    Without an ackId there is nobody to tell, and the request is ignored (spec 4.3, [I]).
    """

    def __init__(self, message: str, ack_id: int | None):
        super().__init__(message)
        self.message = message
        self.ack_id = ack_id


class ProtocolViolation(WebPubSubError):
    """A frame that is not a valid message of the subprotocol: the client is declined.

    Spec 4.3: "the service declines the client if the message doesn't match the format";
    the connection is closed with ``code`` (1008 by default, spec 4.10).
    """

    def __init__(self, message: str, code: int = 1008):
        super().__init__(message)
        self.message = message
        self.code = code
