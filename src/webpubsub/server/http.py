"""HTTP/1.1 requests and responses on the service port, parsed with httptools.

:class:`HttpRequest` is what a REST route or the client endpoint sees; :class:`HttpResponse`
is what it answers. The connection protocol that drives the parser lives in ``connection.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from ..core.errors import BadRequest, RequestError


@dataclass(slots=True)
class HttpRequest:
    """One parsed request: method, raw target, headers (lower-case names) and body."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    client: str = ""
    # More requests of the same client were already read behind this one (pipelined).
    followed: bool = False
    _query: dict[str, list[str]] | None = field(default=None, repr=False)
    # Done when the client's TCP connection closes (set for requests that wait long: a
    # Socket.IO long poll), so the handler need not answer into the void.
    gone: asyncio.Future[None] | None = field(default=None, repr=False)

    @property
    def path(self) -> str:
        """The raw (still percent-encoded) path, without the query."""
        return self.target.split("?", 1)[0]

    @property
    def query_string(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    @property
    def query(self) -> dict[str, list[str]]:
        """Query parameters; repeated keys keep every value (``excluded=a&excluded=b``).

        Raises BadRequest when a value is not UTF-8 once percent-decoded."""
        if self._query is None:
            try:
                self._query = parse_qs(self.query_string, keep_blank_values=True, errors="strict")
            except UnicodeDecodeError:
                # Not replaced with U+FFFD: a name must arrive as sent or not at all.
                raise BadRequest(
                    "The query string is not UTF-8 once percent-decoded (a broken escape "
                    "sequence or a lone surrogate).",
                    target="query",
                ) from None
        return self._query

    def query_one(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


@dataclass(slots=True)
class HttpResponse:
    """A response; with ``stream`` set, the body is written chunk by chunk until it ends
    (server-sent events), and the connection closes afterwards."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str | None = None
    stream: AsyncIterator[bytes] | None = None

    @classmethod
    def json(cls, status: int, value: Any) -> HttpResponse:
        body = json.dumps(value, separators=(",", ":")).encode()
        return cls(status, body, content_type="application/json; charset=utf-8")

    @classmethod
    def error(cls, exc: RequestError) -> HttpResponse:
        """The spec's ``ErrorDetail`` body plus ``x-ms-error-code`` (spec 1.1)."""
        detail: dict[str, Any] = {"code": exc.code, "message": exc.message}
        if exc.target:
            detail["target"] = exc.target
        response = cls.json(exc.status, detail)
        response.headers.append(("x-ms-error-code", exc.code))
        return response

    def serialize(self, *, head: bool = False, keep_alive: bool = True) -> bytes:
        reason = _REASONS.get(self.status, "Unknown")
        lines = [f"HTTP/1.1 {self.status} {reason}"]
        if self.content_type and (self.body or self.stream is not None):
            lines.append(f"Content-Type: {self.content_type}")
        if self.stream is None:
            lines.append(f"Content-Length: {len(self.body)}")
        else:
            keep_alive = False
        if not keep_alive:
            lines.append("Connection: close")
        lines.extend(f"{k}: {v}" for k, v in self.headers)
        head_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        return head_bytes if head else head_bytes + self.body


def origin_form(target: str) -> tuple[str, str | None]:
    """A request target in origin form (``/path?query``) and the authority it named.

    An absolute-form target (``http://host:port/path?q``, RFC 9112 3.2.2) is routed by its
    path like any other, and its authority stands for the Host header; other targets are
    returned as they are, with None.
    """
    if target.startswith("/"):
        return target, None
    scheme, sep, rest = target.partition("://")
    if not sep or not scheme.isascii() or not scheme.isalpha():
        return target, None
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i != -1), default=len(rest))
    authority, path = rest[:cut], rest[cut:]
    if not path.startswith("/"):
        path = "/" + path
    return path, authority.rpartition("@")[2] or None


_REASONS = {s.value: s.phrase for s in HTTPStatus}
