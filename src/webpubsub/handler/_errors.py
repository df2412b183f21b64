"""The error a handler raises to refuse an event.

    WebPubSubError
    └── EventHandlerError   a handler (or the event handler itself) refuses an event:
                            the HTTP status and a text detail go back to the service

For ``connect`` the service answers the client's WebSocket upgrade with the same status
(spec 5.5); for a user event a non-2xx answer becomes an error ack for PubSub clients or drops a
simple client (spec 5.8). Any other exception a handler raises is a bug: it is logged once with
its traceback and answered with a generic 500, because its message may hold secrets.
"""

from __future__ import annotations

from ..core.errors import WebPubSubError

__all__ = ["EventHandlerError"]


class EventHandlerError(WebPubSubError):
    """Refuse an event with an HTTP error status and a text detail.

    Raise it from ``handle_connect`` or ``handle_user_event``, as ``res.fail(code, detail)`` is
    called in ``@azure/web-pubsub-express``. The usual statuses are 400 (bad request), 401
    (unauthorized) and 500 (server error); any 4xx or 5xx is accepted.

    Example::

        async def handle_connect(request: ConnectRequest) -> ConnectResponse:
            if "token" not in request.query:
                raise EventHandlerError(401, "a token is required")
            ...

    Args:
        status: the HTTP status to answer, 400 to 599.
        detail: the text body of the answer; the service logs it and may pass it on to the client,
            so keep secrets out of it.

    Raises:
        ValueError: if ``status`` is not an error status.
    """

    def __init__(self, status: int, detail: str = "") -> None:
        if not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(f"an event handler error needs a 4xx or 5xx status, not {status!r}")
        super().__init__(f"{status} {detail}".rstrip())
        self.status = status
        self.detail = detail
