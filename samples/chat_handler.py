"""A chat app server that is nothing but a Web PubSub event handler.

The service calls this app when clients connect, send events and disconnect:

* ``connect``: the user is the access token's ``sub``, or else the ``name`` query parameter
  (no name at all: refused with 401). The connection joins the ``lobby`` group and may send
  to it and join or leave it.
* the ``message`` event: answered to the sender with ``{"from", "text", "count"}``, where
  ``count`` is kept in the connection state.
* ``connected`` and ``disconnected``: logged.

Run the service with its events pointed here, then this app (``pip install uvicorn``)::

    webpubsub serve --access-key "$KEY" \\
        --event-handler "http://127.0.0.1:8000/eventhandler/{event}"
    export WEBPUBSUB_CONNECTION_STRING="Endpoint=http://127.0.0.1:8080;AccessKey=$KEY;Version=1.0;"
    python samples/chat_handler.py     # or: uvicorn chat_handler:app --app-dir samples --port 8000

and try it with ``python samples/chat_handler_client.py alice``. Against Azure Web PubSub, set
the hub's event handler URL template to ``https://<your app>/eventhandler/{event}`` instead.

``WEBPUBSUB_CONNECTION_STRING`` gives the access key that checks each event's signature;
``WEBPUBSUB_HUB`` names the hub (default ``chat``).
"""

from __future__ import annotations

import logging
import os

from webpubsub.handler import (
    ConnectedRequest,
    ConnectRequest,
    ConnectResponse,
    DisconnectedRequest,
    EventHandlerError,
    UserEventRequest,
    UserEventResponse,
    WebPubSubEventHandler,
)

log = logging.getLogger("chat")

HUB = os.environ.get("WEBPUBSUB_HUB", "chat")
GROUP = "lobby"


async def handle_connect(request: ConnectRequest) -> ConnectResponse:
    """Name the user, put the connection in the lobby and let it talk there."""
    user = (request.claims.get("sub") or request.query.get("name") or [""])[0]
    if not user:
        raise EventHandlerError(401, "Add ?name=<your name> to the URL.")
    request.context.set_state("count", 0)
    return ConnectResponse(
        user_id=user,
        groups=[GROUP],
        roles=[f"webpubsub.sendToGroup.{GROUP}", f"webpubsub.joinLeaveGroup.{GROUP}"],
    )


async def handle_user_event(request: UserEventRequest) -> UserEventResponse | None:
    """Answer ``message`` events; other events get no answer."""
    if request.context.event_name != "message":
        return None
    count = request.context.get_state("count", 0) + 1
    request.context.set_state("count", count)
    text = request.data if isinstance(request.data, str) else request.text
    return UserEventResponse.json({"from": request.context.user_id, "text": text, "count": count})


async def on_connected(request: ConnectedRequest) -> None:
    log.info("%s connected (%s)", request.context.user_id, request.context.connection_id)


async def on_disconnected(request: DisconnectedRequest) -> None:
    count = request.context.get_state("count", 0)
    log.info("%s left after %d messages: %s", request.context.user_id, count, request.reason)


def create_app(hub: str = HUB, connection_string: str | None = None) -> WebPubSubEventHandler:
    """The ASGI app: an event handler for ``hub`` at ``/eventhandler``.

    Args:
        hub: the hub whose events to handle.
        connection_string: the service's connection string; without it, event signatures
            are not checked.

    Returns:
        The handler, an ASGI app.
    """
    if connection_string is None:
        log.warning("WEBPUBSUB_CONNECTION_STRING is not set: event signatures are not checked")
    return WebPubSubEventHandler(
        hub,
        path="/eventhandler",
        connection_string=connection_string,
        handle_connect=handle_connect,
        handle_user_event=handle_user_event,
        on_connected=on_connected,
        on_disconnected=on_disconnected,
    )


app = create_app(connection_string=os.environ.get("WEBPUBSUB_CONNECTION_STRING"))


if __name__ == "__main__":
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
