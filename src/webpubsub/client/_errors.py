"""Errors the client raises, all below ``webpubsub.WebPubSubError``.

    WebPubSubError
    └── WebPubSubClientError
        ├── ConnectError              start() could not open a connection: the handshake was
        │                             refused (status_code 401, 400, ...), the socket closed
        │                             before the ``connected`` message (close_code), the
        │                             network failed, or start_timeout passed
        ├── SendMessageError          an operation did not complete (ack_id says which)
        │   ├── AckError              the service refused it: ``name``/``message`` of the ack
        │   │   ├── Forbidden             ``Forbidden``: the connection lacks the role
        │   │   ├── InvalidMessage        ``BadRequest``: e.g. an invalid group name
        │   │   └── InternalServerError   ``InternalServerError``: e.g. no event handler
        │   ├── SendTimeoutError      no ack within the timeout (also a ``TimeoutError``)
        │   └── ClientStoppedError    the client is stopped, or stopped before the ack came
        └── MessageStreamOverflow     a message stream was not read fast enough

``Duplicate`` acks are not errors: the service had already processed the ackId, which is the
point of resending it (spec 4.5), so the operation succeeds with ``is_duplicated=True``.
``websockets`` exceptions never cross the public API: the transport translates them into
:class:`ConnectError` at the seam (``raise ... from exc`` keeps the original).
"""

from __future__ import annotations

from ..core.errors import WebPubSubError
from ..protocols.downstream import AckErrorDetail


class WebPubSubClientError(WebPubSubError):
    """Base class of the errors of :class:`~webpubsub.client.WebPubSubClient`."""


class ConnectError(WebPubSubClientError):
    """The client could not open a connection to the service.

    Attributes:
        status_code: the HTTP status of a refused handshake (401 for a bad or expired token,
            400 for bad parameters, 404 for a wrong path), else None.
        close_code: the WebSocket close code when the socket closed before the ``connected``
            system message (1008: the service refused the connection), else None.
    """

    def __init__(
        self, message: str, *, status_code: int | None = None, close_code: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.close_code = close_code


class SendMessageError(WebPubSubClientError):
    """An operation (join, leave, send) did not complete.

    Attributes:
        ack_id: the ackId the request carried (None for fire-and-forget sends).
    """

    def __init__(self, message: str, ack_id: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.ack_id = ack_id


class AckError(SendMessageError):
    """The service answered the request with a failed ack (spec 4.4).

    Attributes:
        name: ``error.name`` of the ack (``Forbidden``, ``BadRequest``,
            ``InternalServerError``, or a name a newer service introduces).
        message: ``error.message`` of the ack.
    """

    name = ""

    def __init__(self, message: str, ack_id: int | None = None, name: str | None = None) -> None:
        super().__init__(message, ack_id)
        if name is not None:
            self.name = name

    def __str__(self) -> str:
        return f"{self.name}: {self.message} (ackId {self.ack_id})"


class Forbidden(AckError):
    """The connection lacks the role the request needs (spec 4.6)."""

    name = "Forbidden"


class InvalidMessage(AckError):
    """The service found an argument invalid (ack ``BadRequest``), e.g. an empty group name."""

    name = "BadRequest"


class InternalServerError(AckError):
    """The service could not process the request, e.g. no event handler took the event."""

    name = "InternalServerError"


class SendTimeoutError(SendMessageError, TimeoutError):
    """No ack arrived within the operation's timeout (for fire-and-forget sends: the client
    did not get connected within it).

    The request may still have been processed; sending it again with the same ackId (the
    ``ack_id`` argument) lets the service tell (``Duplicate``).
    """


class ClientStoppedError(SendMessageError):
    """The client is stopped, or it stopped (or gave up reconnecting) before the ack came."""


class InvocationError(WebPubSubClientError):
    """An :meth:`~webpubsub.client.WebPubSubClient.invoke_event` that did not get an answer:
    the service or the event handler answered an error (``name``: ``NotFound``,
    ``Timeout``, ``BadRequest``, ``Throttled``, ``InternalServerError``...), or the
    connection dropped before the answer (``name`` empty). Invocations are not retried."""

    def __init__(self, message: str, invocation_id: str, name: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.invocation_id = invocation_id
        self.name = name

    def __str__(self) -> str:
        named = f"{self.name}: " if self.name else ""
        return f"{named}{self.message} (invocation {self.invocation_id})"


class MessageStreamOverflow(WebPubSubClientError):
    """A :meth:`~webpubsub.client.WebPubSubClient.messages` stream fell ``maxsize`` messages
    behind; it was closed rather than grow without bound. Messages it had buffered are still
    delivered before this is raised."""


_ACK_ERRORS: dict[str, type[AckError]] = {
    cls.name: cls for cls in (Forbidden, InvalidMessage, InternalServerError)
}


def ack_error(ack_id: int, detail: AckErrorDetail | None) -> AckError:
    """The typed error of a failed ack: a subclass chosen by ``error.name``."""
    if detail is None:
        return AckError("The service reported a failure without details.", ack_id, "")
    cls = _ACK_ERRORS.get(detail.name)
    if cls is None:
        return AckError(detail.message, ack_id, detail.name)
    return cls(detail.message, ack_id)
