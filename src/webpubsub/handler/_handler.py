"""``WebPubSubEventHandler``: the configuration and the steps every adapter drives.

An event goes through four steps, the same under ASGI and WSGI:

1. ``route``: is the request ours at all (path, CloudEvents headers, hub)? If not, the next app
   (or a 404) gets it.
2. ``check``: answer the abuse-protection preflight, or verify the connection id and the
   signature. This happens before the body is read, so a forged request costs no body.
3. ``prepare``: parse the body into a typed request and pick the user's handler.
4. ``invoke`` the handler and turn its result, or its exception, into the answer.

Steps 1-3 and the mapping of results and exceptions are plain functions; only reading the body
and awaiting the handler differ between ``_asgi.py`` and ``_wsgi.py``.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..sdk import parse_connection_string
from . import _cloudevents as ce
from ._cloudevents import EventKind, HttpResponse, Request, Route
from ._errors import EventHandlerError
from ._models import (
    ConnectedRequest,
    ConnectionContext,
    ConnectRequest,
    ConnectResponse,
    DisconnectedRequest,
    GroupJoinedRequest,
    GroupLeftRequest,
    UserEventRequest,
    UserEventResponse,
)

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

    from ._asgi import ASGIApp, Receive, Scope, Send

__all__ = [
    "DEFAULT_PATH",
    "MAX_BODY_SIZE",
    "ConnectHandler",
    "ConnectedHandler",
    "DisconnectedHandler",
    "GroupJoinedHandler",
    "GroupLeftHandler",
    "UserEventHandler",
    "UserEventResult",
    "WebPubSubEventHandler",
]

log = logging.getLogger("webpubsub.handler")

DEFAULT_PATH = "/api/webpubsub/hubs/{hub}/"
"""Where ``@azure/web-pubsub-express`` listens by default; ``{hub}`` is the lower-case hub."""

MAX_BODY_SIZE = 16 * 1024 * 1024
"""The largest event body read (bytes); larger ones are answered 413."""

UserEventResult = UserEventResponse | str | bytes | None
ConnectHandler = Callable[
    [ConnectRequest], Awaitable[ConnectResponse | None] | ConnectResponse | None
]
UserEventHandler = Callable[[UserEventRequest], Awaitable[UserEventResult] | UserEventResult]
ConnectedHandler = Callable[[ConnectedRequest], Awaitable[None] | None]
DisconnectedHandler = Callable[[DisconnectedRequest], Awaitable[None] | None]
GroupJoinedHandler = Callable[[GroupJoinedRequest], Awaitable[None] | None]
GroupLeftHandler = Callable[[GroupLeftRequest], Awaitable[None] | None]

_HANDLER_NAMES = {
    EventKind.CONNECT: "handle_connect",
    EventKind.USER: "handle_user_event",
    EventKind.CONNECTED: "on_connected",
    EventKind.DISCONNECTED: "on_disconnected",
    EventKind.JOINED: "on_group_joined",
    EventKind.LEFT: "on_group_left",
}


@dataclass(frozen=True, slots=True)
class Event:
    """An event that passed ``check``: what it is and whom it is about."""

    route: Route
    context: ConnectionContext


@dataclass(frozen=True, slots=True)
class Call:
    """A handler call ready to run: the user's function (or None) and its request."""

    name: str
    function: Callable[[Any], Any] | None
    is_async: bool
    request: Request


class WebPubSubEventHandler:
    """Receive Web PubSub events (CloudEvents over HTTP) and answer them: an ASGI app.

    The Python counterpart of ``WebPubSubEventHandler`` in ``@azure/web-pubsub-express``.
    Point a hub's event handler URL template at it (for example
    ``http://app:8000/eventhandler/{event}`` with ``path="/eventhandler"``), and give it async
    (or plain) functions for the events you care about:

    * ``handle_connect(ConnectRequest)`` returns a ``ConnectResponse`` (user, groups, roles,
      subprotocol) or None to accept, or raises ``EventHandlerError(401, ...)`` to refuse;
    * ``handle_user_event(UserEventRequest)`` returns a ``UserEventResponse`` (or ``str`` /
      ``bytes``) to send back to the client, or None;
    * ``on_connected(ConnectedRequest)``, ``on_disconnected(DisconnectedRequest)``,
      ``on_group_joined(GroupJoinedRequest)`` and ``on_group_left(GroupLeftRequest)`` are
      notifications; their results are ignored. The service sends ``joined``/``left`` only
      when the hub's event handler asks for group presence events.

    Events without a function are accepted: ``connect`` as the token says, user events with
    nothing sent back. A function that raises anything but ``EventHandlerError`` is logged
    with its traceback and answered with a generic 500.

    The object is an ASGI application: run it with any ASGI server, or mount it in Starlette
    or FastAPI. ``as_asgi(app)`` wraps another ASGI app and passes it every request that is
    not a Web PubSub event for this hub; ``as_wsgi()`` gives the same for WSGI servers.

    Async functions run on the server's event loop; plain functions run in a worker thread
    under ASGI and inline under WSGI (where async functions get a fresh event loop per call).

    Example::

        async def handle_connect(request: ConnectRequest) -> ConnectResponse:
            return ConnectResponse(user_id=request.query["user"][0], groups=["lobby"])

        handler = WebPubSubEventHandler(
            "chat",
            path="/eventhandler",
            connection_string=os.environ["WEBPUBSUB_CONNECTION_STRING"],
            handle_connect=handle_connect,
        )
        # uvicorn module:handler

    Args:
        hub: the hub whose events to handle (compared case-insensitively with ``ce-hub``).
        path: the URL path to serve, with its sub-paths (``{event}`` in the URL template
            lands there); ``{hub}`` is replaced by the lower-case hub. Compared
            case-insensitively; ``"/"`` serves every path. Relative to the mount point when
            mounted.
        access_keys: the service's access keys. When given (here or through
            ``connection_string``), every event must carry a ``ce-signature`` made with one
            of them (spec 5.4), or it is answered 401.
        connection_string: a service connection string; its ``AccessKey`` is added to
            ``access_keys``.
        allowed_endpoints: the services allowed to send events, as endpoint URLs or host
            names; the abuse-protection preflight of any other origin is refused. None (the
            default) or ``"*"`` allows every origin.
        handle_connect: called for ``connect``.
        handle_user_event: called for every user event (``message`` and custom events).
        on_connected: called for ``connected``.
        on_disconnected: called for ``disconnected``.
        on_group_joined: called for ``joined`` (group presence; express ``onGroupJoined``).
        on_group_left: called for ``left`` (express ``onGroupLeft``).
        max_body_size: the largest event body accepted, in bytes; larger ones get 413.

    Raises:
        ValueError: for an empty hub, an empty access key, an allowed endpoint without a host,
            or a non-positive ``max_body_size``.
        webpubsub.ConnectionStringError: for a connection string that cannot be parsed (a
            ``ValueError`` too).
        TypeError: if a handler is not callable.
    """

    def __init__(
        self,
        hub: str,
        *,
        path: str = DEFAULT_PATH,
        access_keys: Sequence[str] = (),
        connection_string: str | None = None,
        allowed_endpoints: Sequence[str] | None = None,
        handle_connect: ConnectHandler | None = None,
        handle_user_event: UserEventHandler | None = None,
        on_connected: ConnectedHandler | None = None,
        on_disconnected: DisconnectedHandler | None = None,
        on_group_joined: GroupJoinedHandler | None = None,
        on_group_left: GroupLeftHandler | None = None,
        max_body_size: int = MAX_BODY_SIZE,
    ) -> None:
        if not isinstance(hub, str) or not hub:
            raise ValueError("the hub must be a non-empty string")
        if max_body_size <= 0:
            raise ValueError("max_body_size must be positive")
        keys = [access_keys] if isinstance(access_keys, str) else list(access_keys)
        if connection_string is not None:
            keys.append(parse_connection_string(connection_string).access_key)
        if not all(isinstance(key, str) and key for key in keys):
            raise ValueError("access keys must be non-empty strings")
        self.hub = hub
        self.path = "/" + path.replace("{hub}", hub.lower()).strip("/").lower()
        self.max_body_size = max_body_size
        self._keys = tuple(dict.fromkeys(keys))
        self._allowed = ce.allowed_hosts(allowed_endpoints)
        self._functions: dict[EventKind, tuple[Callable[[Any], Any], bool]] = {}
        for kind, function in (
            (EventKind.CONNECT, handle_connect),
            (EventKind.USER, handle_user_event),
            (EventKind.CONNECTED, on_connected),
            (EventKind.DISCONNECTED, on_disconnected),
            (EventKind.JOINED, on_group_joined),
            (EventKind.LEFT, on_group_left),
        ):
            if function is None:
                continue
            if not callable(function):
                raise TypeError(f"{_HANDLER_NAMES[kind]} must be callable")
            self._functions[kind] = (function, _is_async_callable(function))

    def __repr__(self) -> str:
        return f"WebPubSubEventHandler(hub={self.hub!r}, path={self.path!r})"

    @property
    def verifies_signatures(self) -> bool:
        """Whether events must carry a ``ce-signature`` made with one of the access keys."""
        return bool(self._keys)

    # -- the ASGI and WSGI faces ---------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve as an ASGI app: events for this hub are answered, anything else gets 404.

        Args:
            scope: the ASGI connection scope.
            receive: the ASGI receive channel.
            send: the ASGI send channel.
        """
        from ._asgi import serve_asgi

        await serve_asgi(self, None, scope, receive, send)

    def as_asgi(self, app: ASGIApp | None = None) -> ASGIApp:
        """An ASGI app answering events and passing every other request to ``app``.

        With ``app`` this is a middleware: Starlette's ``app.add_middleware(handler.as_asgi)``
        or plain ``handler.as_asgi(other_app)``. Without it, other requests get 404.

        Args:
            app: the ASGI app behind the handler, if any.

        Returns:
            The ASGI app.
        """
        from ._asgi import ASGIMiddleware

        return ASGIMiddleware(self, app)

    def as_wsgi(self, app: WSGIApplication | None = None) -> WSGIApplication:
        """A WSGI app answering events and passing every other request to ``app``.

        Async handler functions run on a new event loop per call; plain functions run
        inline in the server's worker thread.

        Args:
            app: the WSGI app behind the handler, if any (other requests get 404 without).

        Returns:
            The WSGI app.
        """
        from ._wsgi import WSGIMiddleware

        return WSGIMiddleware(self, app)

    # -- the steps (shared by both faces) -------------------------------------------------

    def route(self, method: str, path: str, headers: Mapping[str, str]) -> Route | None:
        """Step 1: what a request is, or None when it is not for this handler.

        Args:
            method: the HTTP method.
            path: the request path, relative to the mount point.
            headers: the request headers with lower-case names.

        Returns:
            The route, or None to leave the request to the next app.
        """
        if not self._path_matches(path):
            return None
        return ce.classify(method.upper(), headers, self.hub)

    def check(self, route: Route, headers: Mapping[str, str]) -> Event | HttpResponse:
        """Step 2: answer the preflight, or check an event's identity and signature.

        Args:
            route: what ``route`` said the request is.
            headers: the request headers with lower-case names.

        Returns:
            The event to read the body of, or the answer to send at once (the preflight's,
            400 without ``ce-connectionId``, 401 for a bad signature).
        """
        if route.preflight:
            return ce.preflight(headers.get("webhook-request-origin", ""), self._allowed)
        try:
            context = ce.context_of(route, headers)
        except EventHandlerError as exc:
            log.warning("refused a %s event: %s", route.event_name, exc.detail)
            return ce.error_answer(exc)
        if self._keys and not ce.signature_valid(
            headers.get("ce-signature"), context.connection_id, self._keys
        ):
            problem = "no ce-signature" if not headers.get("ce-signature") else "a bad signature"
            log.warning(
                "refused the %s event of connection %s: %s",
                route.event_name,
                context.connection_id,
                problem,
            )
            return HttpResponse.text(401, "The ce-signature does not match any access key.")
        return Event(route, context)

    def prepare(self, event: Event, headers: Mapping[str, str], body: bytes) -> Call | HttpResponse:
        """Step 3: parse the body into a typed request and pick the function to call.

        Args:
            event: what ``check`` returned.
            headers: the request headers with lower-case names.
            body: the whole body.

        Returns:
            The call to make, or a 400 answer for a body that does not fit the event.
        """
        assert event.route.kind is not None
        try:
            request = ce.parse_request(
                event.route, event.context, headers.get("content-type", ""), body, headers
            )
        except EventHandlerError as exc:
            log.warning(
                "refused the %s event of connection %s: %s",
                event.route.event_name,
                event.context.connection_id,
                exc.detail,
            )
            return ce.error_answer(exc)
        function, is_async = self._functions.get(event.route.kind, (None, False))
        return Call(_HANDLER_NAMES[event.route.kind], function, is_async, request)

    async def invoke_async(self, call: Call) -> HttpResponse:
        """Step 4 under asyncio: await the function (plain ones run in a worker thread).

        Args:
            call: what ``prepare`` returned.

        Returns:
            The answer.
        """
        if call.function is None:
            return self.finish(call, None)
        try:
            if call.is_async:
                result = await call.function(call.request)
            else:
                result = await asyncio.to_thread(call.function, call.request)
                if inspect.isawaitable(result):
                    result = await result
        except Exception as exc:
            return self.fail(call, exc)
        return self.finish(call, result)

    def invoke_sync(self, call: Call) -> HttpResponse:
        """Step 4 without an event loop: call the function (async ones get a new loop).

        Args:
            call: what ``prepare`` returned.

        Returns:
            The answer.
        """
        if call.function is None:
            return self.finish(call, None)
        try:
            result = call.function(call.request)
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
        except Exception as exc:
            return self.fail(call, exc)
        return self.finish(call, result)

    def finish(self, call: Call, result: object) -> HttpResponse:
        """Turn a function's result into the answer; a result of the wrong kind is a 500.

        Args:
            call: the call that produced it.
            result: what the function returned.

        Returns:
            The answer.
        """
        try:
            return ce.answer(call.request, result)
        except (TypeError, ValueError) as exc:
            log.error("%s gave an answer that cannot be sent: %s", call.name, exc)
            return ce.INTERNAL_ERROR

    def fail(self, call: Call, exc: Exception) -> HttpResponse:
        """Turn a function's exception into the answer (the one place that maps them).

        ``EventHandlerError`` is a deliberate refusal: its status and detail are sent. Anything
        else is a bug: logged once with its traceback, answered with a bare 500 because its
        message may hold secrets.

        Args:
            call: the call that raised.
            exc: what it raised.

        Returns:
            The answer.
        """
        context = call.request.context
        if isinstance(exc, EventHandlerError):
            log.info(
                "%s refused the %s event of connection %s: %s",
                call.name,
                context.event_name,
                context.connection_id,
                exc,
            )
            return ce.error_answer(exc)
        log.error(
            "%s raised on the %s event of connection %s",
            call.name,
            context.event_name,
            context.connection_id,
            exc_info=exc,
        )
        return ce.INTERNAL_ERROR

    def _path_matches(self, path: str) -> bool:
        if self.path == "/":
            return True
        path = path.lower()
        return path == self.path or path.startswith(self.path + "/")


def _is_async_callable(function: Callable[..., Any]) -> bool:
    while isinstance(function, functools.partial):
        function = function.func
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
