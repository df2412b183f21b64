"""The ASGI face of the event handler: pure ASGI 3, no framework needed.

It only moves bytes: it reads the method, path, headers and body from the ASGI channels, runs
the handler's steps, and writes the ``HttpResponse`` back. Requests that are not events for the
handler's hub go to the wrapped app, or get a 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from ._cloudevents import NOT_FOUND, PAYLOAD_TOO_LARGE, HttpResponse, Route

if TYPE_CHECKING:
    from ._handler import WebPubSubEventHandler

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ASGIMiddleware:
    """An event handler in front of an optional ASGI app (``WebPubSubEventHandler.as_asgi``)."""

    def __init__(self, handler: WebPubSubEventHandler, app: ASGIApp | None = None) -> None:
        self.handler = handler
        self.app = app

    def __repr__(self) -> str:
        return f"ASGIMiddleware({self.handler!r}, app={self.app!r})"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await serve_asgi(self.handler, self.app, scope, receive, send)


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    pass


async def serve_asgi(
    handler: WebPubSubEventHandler,
    app: ASGIApp | None,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """Serve one ASGI connection: answer it if it is an event, else pass it on."""
    if scope["type"] != "http":
        if app is not None:
            await app(scope, receive, send)
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1000})  # before accept: a 403
        return
    headers = _headers(scope)
    route = handler.route(scope["method"], _route_path(scope), headers)
    if route is None:
        if app is not None:
            await app(scope, receive, send)
        else:
            await _send(send, NOT_FOUND)
        return
    try:
        response = await _answer(handler, route, headers, receive)
    except _ClientGone:
        return  # nobody to answer
    await _send(send, response)


async def _answer(
    handler: WebPubSubEventHandler, route: Route, headers: dict[str, str], receive: Receive
) -> HttpResponse:
    event = handler.check(route, headers)
    if isinstance(event, HttpResponse):
        return event
    try:
        body = await _read_body(receive, headers, handler.max_body_size)
    except _BodyTooLarge:
        return PAYLOAD_TOO_LARGE
    call = handler.prepare(event, headers, body)
    if isinstance(call, HttpResponse):
        return call
    return await handler.invoke_async(call)


def _headers(scope: Scope) -> dict[str, str]:
    """Header names lower-cased; repeated headers joined with ``,`` (RFC 9110 5.3)."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", ()):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1").strip()
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


def _route_path(scope: Scope) -> str:
    """The path below the mount point: ``path`` minus ``root_path`` when it starts with it.

    Servers and frameworks differ on whether ``path`` includes ``root_path`` (ASGI says it
    does; older ones did not), so strip it only when it is there, as Starlette does.
    """
    path: str = scope.get("path", "") or "/"
    root: str = scope.get("root_path", "") or ""
    if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
        path = path[len(root) :]
    return path or "/"


async def _read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(send: Send, response: HttpResponse) -> None:
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in response.headers
    ]
    if response.status != 204:  # RFC 9110 8.6: no Content-Length on a 204
        headers.append((b"content-length", str(len(response.body)).encode("ascii")))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


async def _lifespan(receive: Receive, send: Send) -> None:
    """Serve as a standalone app: there is nothing to start or stop."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
