"""The app side of Web PubSub events: receive CloudEvents from the service and answer them.

When clients connect, send events and disconnect, the service calls the app server over HTTP
(CloudEvents in binary mode, spec section 5). ``WebPubSubEventHandler`` is the Python
counterpart of ``@azure/web-pubsub-express``: an ASGI app (and, with ``as_wsgi()``, a WSGI app)
that answers the abuse-protection preflight, checks ``ce-signature`` against the access keys,
parses each event into a typed request and turns what your functions return into the answer
the service expects.

Example::

    from webpubsub.handler import (
        ConnectRequest, ConnectResponse, UserEventRequest, UserEventResponse,
        WebPubSubEventHandler,
    )

    async def handle_connect(request: ConnectRequest) -> ConnectResponse:
        return ConnectResponse(user_id=request.query["name"][0], groups=["lobby"])

    async def handle_user_event(request: UserEventRequest) -> UserEventResponse:
        return UserEventResponse.text(f"{request.context.user_id} said {request.data}")

    app = WebPubSubEventHandler(
        "chat", path="/eventhandler", access_keys=[KEY],
        handle_connect=handle_connect, handle_user_event=handle_user_event,
    )
    # uvicorn module:app, with the hub's URL template http://host:8000/eventhandler/{event}

It needs no web framework at run time: it is plain ASGI 3 and WSGI.
"""

from __future__ import annotations

from ._errors import EventHandlerError
from ._handler import (
    DEFAULT_PATH,
    MAX_BODY_SIZE,
    ConnectedHandler,
    ConnectHandler,
    DisconnectedHandler,
    GroupJoinedHandler,
    GroupLeftHandler,
    UserEventHandler,
    UserEventResult,
    WebPubSubEventHandler,
)
from ._models import (
    ClientCertificate,
    ConnectedRequest,
    ConnectionContext,
    ConnectRequest,
    ConnectResponse,
    DataType,
    DisconnectedRequest,
    GroupJoinedRequest,
    GroupLeftRequest,
    UserEventRequest,
    UserEventResponse,
)

__all__ = [
    "DEFAULT_PATH",
    "MAX_BODY_SIZE",
    "ClientCertificate",
    "ConnectHandler",
    "ConnectRequest",
    "ConnectResponse",
    "ConnectedHandler",
    "ConnectedRequest",
    "ConnectionContext",
    "DataType",
    "DisconnectedHandler",
    "DisconnectedRequest",
    "EventHandlerError",
    "GroupJoinedHandler",
    "GroupJoinedRequest",
    "GroupLeftHandler",
    "GroupLeftRequest",
    "UserEventHandler",
    "UserEventRequest",
    "UserEventResponse",
    "UserEventResult",
    "WebPubSubEventHandler",
]
