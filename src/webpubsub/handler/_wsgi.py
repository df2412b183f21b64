"""The WSGI face of the event handler (PEP 3333), for Flask, Django and other WSGI apps.

Like the ASGI face it only moves bytes; the handler's steps decide. Async handler functions
run on a new event loop per call, which is fine for the few events a connection produces.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING

from ._cloudevents import NOT_FOUND, PAYLOAD_TOO_LARGE, HttpResponse, Route

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

    from ._handler import WebPubSubEventHandler

_READ_CHUNK = 64 * 1024


class WSGIMiddleware:
    """An event handler in front of an optional WSGI app (``WebPubSubEventHandler.as_wsgi``)."""

    def __init__(self, handler: WebPubSubEventHandler, app: WSGIApplication | None = None) -> None:
        self.handler = handler
        self.app = app

    def __repr__(self) -> str:
        return f"WSGIMiddleware({self.handler!r}, app={self.app!r})"

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        headers = _headers(environ)
        route = self.handler.route(
            environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "") or "/", headers
        )
        if route is None:
            if self.app is not None:
                return self.app(environ, start_response)
            response = NOT_FOUND
        else:
            response = self._answer(route, headers, environ)
        start_response(_status_line(response.status), _response_headers(response))
        return [response.body]

    def _answer(
        self, route: Route, headers: dict[str, str], environ: WSGIEnvironment
    ) -> HttpResponse:
        event = self.handler.check(route, headers)
        if isinstance(event, HttpResponse):
            return event
        body = _read_body(environ, headers, self.handler.max_body_size)
        if body is None:
            return PAYLOAD_TOO_LARGE
        call = self.handler.prepare(event, headers, body)
        if isinstance(call, HttpResponse):
            return call
        return self.handler.invoke_sync(call)


def _headers(environ: WSGIEnvironment) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").lower()] = str(value).strip()
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = str(environ[key]).strip()
    return headers


def _read_body(environ: WSGIEnvironment, headers: dict[str, str], limit: int) -> bytes | None:
    """The whole body, or None when it is larger than ``limit``."""
    stream = environ["wsgi.input"]
    declared = headers.get("content-length", "")
    if declared.isdigit():
        remaining = int(declared)
        if remaining > limit:
            return None
    elif environ.get("wsgi.input_terminated"):
        remaining = limit + 1  # chunked: read to the end, one byte past the limit at most
    else:
        return b""  # PEP 3333: without a length there is no body to read
    chunks: list[bytes] = []
    size = 0
    while remaining > 0:
        chunk = stream.read(min(remaining, _READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        remaining -= len(chunk)
    if size > limit:
        return None
    return b"".join(chunks)


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


def _response_headers(response: HttpResponse) -> list[tuple[str, str]]:
    if response.status == 204:  # RFC 9110 8.6: no Content-Length on a 204
        return list(response.headers)
    return [*response.headers, ("Content-Length", str(len(response.body)))]
