"""The Live Trace page: a login form, the viewer page and its server-sent-event stream.

Paths (all exact, served before REST routing):

=============================  ===============================================================
``GET /livetrace``             the viewer page, or the login form without a valid session;
                               ``?access_token=<jwt>`` logs in with a token and redirects
``POST /livetrace/login``      form field ``credential``: an access-key JWT whose ``aud`` is
                               ``<endpoint>/livetrace`` (spec 7); the page's script mints it
                               in the browser from the key typed in, so the key never travels
``POST /livetrace/logout``     ends the session
``GET /livetrace/stream``      ``text/event-stream`` of records (session cookie, or a bearer
                               token / ``access_token`` for scripts); filters in the query
``GET /livetrace/*.js|css``    the page's assets (no secrets, served without a session)
=============================  ===============================================================

Every credential is a key-signed token, never the raw key: a key sent in a form or a URL
would cross the network (and land in proxy logs), which SECURITY.md promises never happens.
Failed credentials are counted per client address (:class:`LoginThrottle`): past the limit
the address gets 429 with ``Retry-After``.

A login creates a random session token kept in memory with its expiry and a digest of the
access key it proved, sent back as an HttpOnly, SameSite=Strict cookie. Rotating that key away
ends the session. Keys and tokens are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from importlib import resources
from string import Template
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from ... import __version__
from ...auth.tokens import CLOCK_SKEW_SECONDS, TokenValidator, bearer_token
from ...core.errors import Unauthorized
from ..http import HttpRequest, HttpResponse
from ._health import method_not_allowed, serving
from ._throttle import LoginThrottle, client_address
from ._trace import Category, LiveTrace, TraceFilter, Viewer
from ._workers import WorkerLink

if TYPE_CHECKING:
    from ..app import Page, Service
    from ..connection import ServiceProtocol

log = logging.getLogger("webpubsub.livetrace")

PATH = "/livetrace"
COOKIE = "webpubsub_livetrace"
SESSION_LIFETIME = 8 * 3600.0
"""Seconds a login lasts."""
MAX_SESSIONS = 64
"""Sessions kept at once; the oldest is forgotten past this."""
POLL_INTERVAL = 0.25
"""Seconds between checks that the viewer is still there and the service still serving."""
HEARTBEAT_INTERVAL = 15.0
"""Seconds between SSE comments on an idle stream (keeps proxies from timing it out)."""

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
ASSETS = {
    "livetrace.js": "text/javascript; charset=utf-8",
    "login.js": "text/javascript; charset=utf-8",
    "livetrace.css": "text/css",
}


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


@dataclass(slots=True)
class _Session:
    expires: float
    key_digest: bytes


class Sessions:
    """Live trace logins held in memory: random token -> expiry and the key it proved.

    Args:
        keys: the service's access keys (the same list the settings hold, so a reload that
            rotates a key away ends the sessions it opened).
        clock: monotonic seconds (injected by tests).
    """

    def __init__(
        self,
        keys: list[str],
        *,
        lifetime: float = SESSION_LIFETIME,
        limit: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = keys
        self._lifetime = lifetime
        self._limit = limit
        self._clock = clock
        self._sessions: dict[str, _Session] = {}

    def create(self, key: str) -> str:
        """Open a session for someone who proved ``key``; returns the cookie value."""
        now = self._clock()
        for token in [t for t, s in self._sessions.items() if s.expires <= now]:
            del self._sessions[token]
        while len(self._sessions) >= self._limit:
            del self._sessions[next(iter(self._sessions))]
        token = secrets.token_urlsafe(32)
        self._sessions[token] = _Session(now + self._lifetime, _digest(key))
        return token

    def valid(self, token: str | None) -> bool:
        """Whether ``token`` names a live session whose key is still configured."""
        if not token:
            return False
        session = self._sessions.get(token)
        if session is None:
            return False
        if session.expires <= self._clock() or not any(
            hmac.compare_digest(session.key_digest, _digest(key)) for key in self._keys
        ):
            del self._sessions[token]
            return False
        return True

    def end(self, token: str | None) -> None:
        if token:
            self._sessions.pop(token, None)

    def export(self, token: str) -> tuple[float, str] | None:
        """A live session as (seconds left, key digest in hex), for another worker."""
        if not self.valid(token):
            return None
        session = self._sessions[token]
        return session.expires - self._clock(), session.key_digest.hex()

    def adopt(self, token: str, seconds_left: float, key_digest: str) -> None:
        """Take on a session another worker opened (``serve --workers``)."""
        if seconds_left > 0 and token not in self._sessions:
            while len(self._sessions) >= self._limit:
                del self._sessions[next(iter(self._sessions))]
            expires = self._clock() + seconds_left
            self._sessions[token] = _Session(expires, bytes.fromhex(key_digest))

    def __len__(self) -> int:
        return len(self._sessions)


def _asset(name: str) -> bytes:
    return resources.files("webpubsub.server").joinpath("static", name).read_bytes()


class LiveTracePages:
    """The live trace endpoints of one service.

    Args:
        service: the running service (settings, node, token validator).
        trace: the record source viewers subscribe to.
        link: under ``serve --workers``, the way to the other workers' records.
    """

    def __init__(self, service: Service, trace: LiveTrace, link: WorkerLink | None = None) -> None:
        self._service = service
        self.trace = trace
        self.link = link
        self.sessions = Sessions(service.settings.access_keys)
        self.throttle = LoginThrottle()
        self._login = Template(_asset("login.html").decode("utf-8"))
        self._page = Template(_asset("livetrace.html").decode("utf-8"))
        self._assets = {name: (_asset(name), kind) for name, kind in ASSETS.items()}

    def routes(self) -> dict[str, Page]:
        """Exact paths and their handlers, for ``Service.pages``."""
        routes: dict[str, Page] = {
            PATH: self.index,
            f"{PATH}/": self.slash,
            f"{PATH}/login": self.login,
            f"{PATH}/logout": self.logout,
            f"{PATH}/stream": self.stream,
        }
        for name in self._assets:
            routes[f"{PATH}/{name}"] = self.asset
        return routes

    # -- pages -----------------------------------------------------------------------------

    async def index(self, request: HttpRequest) -> HttpResponse:
        """The viewer for a logged-in browser, the login form otherwise."""
        if request.method not in ("GET", "HEAD"):
            return method_not_allowed("GET, HEAD")
        token = request.query_one("access_token")
        if token is not None:
            wait = self._throttled(request)
            if wait is not None:
                return self._too_many(wait)
            grant = self._check(token, request)
            if grant is None:
                return self._login_form(401, "The token is not valid for this service.")
            return self._logged_in(grant[0])
        if not await self._session_valid(_cookie(request, COOKIE)):
            return self._login_form(200, "")
        body = self._page.substitute(
            endpoint=html.escape(self._service.settings.endpoint),
            version=html.escape(__version__),
            categories=html.escape(",".join(c.value for c in Category)),
        )
        return _html(200, body)

    async def slash(self, request: HttpRequest) -> HttpResponse:
        """``/livetrace/`` is a common typo for ``/livetrace``."""
        return _redirect(PATH)

    async def login(self, request: HttpRequest) -> HttpResponse:
        """Check the posted token (minted by the page's script); set the session cookie."""
        if request.method != "POST":
            return method_not_allowed("POST")
        wait = self._throttled(request)
        if wait is not None:
            return self._too_many(wait)
        form = parse_qs(request.body.decode("utf-8", "replace"), keep_blank_values=True)
        credential = (form.get("credential") or [""])[0].strip()
        grant = self._check(credential, request)
        if grant is None:
            return self._login_form(401, "That access key or token is not valid.")
        return self._logged_in(grant[0])

    async def logout(self, request: HttpRequest) -> HttpResponse:
        if request.method != "POST":
            return method_not_allowed("POST")
        session = _cookie(request, COOKIE)
        self.sessions.end(session)
        if self.link is not None and session:
            await self.link.end_session(session)  # the other workers may have adopted it
        response = _redirect(PATH)
        response.headers.append(
            ("Set-Cookie", f"{COOKIE}=; Path={PATH}; Max-Age=0; HttpOnly; SameSite=Strict")
        )
        return response

    async def asset(self, request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return method_not_allowed("GET, HEAD")
        body, kind = self._assets[request.path.rsplit("/", 1)[-1]]
        response = HttpResponse(200, body, content_type=kind)
        response.headers.append(("Cache-Control", "no-cache"))
        response.headers.append(("X-Content-Type-Options", "nosniff"))
        return response

    async def stream(self, request: HttpRequest) -> HttpResponse:
        """Server-sent events: ``hello``, then ``records`` batches and ``dropped`` counts.

        Query: ``hub``, ``user``, ``connection``, ``group``, ``category`` (repeatable or
        comma-separated) filter on the server; ``preview=1`` adds payload previews.
        """
        if request.method != "GET":
            return method_not_allowed("GET")
        session = _cookie(request, COOKIE)
        allowed: Callable[[], bool]
        if await self._session_valid(session):
            allowed = partial(self.sessions.valid, session)
        else:
            token = bearer_token(request.header("authorization")) or request.query_one(
                "access_token"
            )
            wait = self._throttled(request) if token else None
            if wait is not None:
                response = HttpResponse.json(
                    429,
                    {
                        "code": "Error.TooManyRequests",
                        "message": "Too many failed Live Trace sign-ins from this address.",
                    },
                )
                response.headers.append(("Retry-After", str(wait)))
                return response
            grant = self._check(token, request) if token else None
            if grant is None:
                return HttpResponse.json(
                    401,
                    {
                        "code": "Error.Unauthorized",
                        "message": "Log in at /livetrace, or pass an access-key token whose "
                        "audience is <endpoint>/livetrace.",
                    },
                )
            allowed = partial(self._still_granted, *grant)
        viewer = Viewer(
            TraceFilter.from_query(request.query),
            preview=request.query_one("preview") in ("1", "true", "on"),
        )
        proto = next((p for p in self._service.protocols if p.peer == request.client), None)
        response = HttpResponse(
            200,
            content_type="text/event-stream; charset=utf-8",
            stream=self._events(viewer, allowed, proto, request.query_string),
        )
        response.headers.extend([("Cache-Control", "no-store"), ("X-Accel-Buffering", "no")])
        return response

    async def _events(
        self,
        viewer: Viewer,
        allowed: Callable[[], bool],
        proto: ServiceProtocol | None,
        query: str = "",
    ) -> AsyncIterator[bytes]:
        """The SSE body; ends when the viewer leaves, the service stops, or the session or
        token stops being valid (logout, expiry, key rotated away)."""
        wake = asyncio.Event()
        viewer.wake = wake.set
        self.trace.subscribe(viewer)
        feeds = self.link.follow(viewer, query) if self.link is not None else None
        try:
            hello = {
                "endpoint": self._service.settings.endpoint,
                "version": __version__,
                "preview": viewer.preview,
                "categories": [c.value for c in Category],
            }
            if self.link is not None:
                hello["worker"] = self.link.index
            yield b"retry: 2000\nevent: hello\ndata: " + json.dumps(hello).encode() + b"\n\n"
            dropped = 0
            quiet_since = time.monotonic()
            while True:
                if not len(viewer):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), POLL_INTERVAL)
                wake.clear()
                if self._viewer_gone(proto) or not allowed():
                    return
                if feeds is not None:
                    feeds.refresh()  # a worker restarted since: follow the new one
                records = viewer.take()
                chunk = b""
                if records:
                    data = json.dumps(records, separators=(",", ":"), ensure_ascii=False)
                    chunk = b"event: records\ndata: " + data.encode() + b"\n\n"
                if viewer.dropped != dropped:
                    dropped = viewer.dropped
                    chunk += b'event: dropped\ndata: {"dropped":%d}\n\n' % dropped
                now = time.monotonic()
                if chunk:
                    quiet_since = now
                    yield chunk
                elif now - quiet_since >= HEARTBEAT_INTERVAL:
                    quiet_since = now
                    yield b": keep-alive\n\n"
        finally:
            if feeds is not None:
                feeds.close()
            self.trace.unsubscribe(viewer)

    def _viewer_gone(self, proto: ServiceProtocol | None) -> bool:
        if proto is not None:
            transport = proto.transport
            if transport is None or transport.is_closing():
                return True
        return not serving(self._service)

    # -- helpers ---------------------------------------------------------------------------

    async def _session_valid(self, token: str | None) -> bool:
        """Whether ``token`` is a live session here or (under ``--workers``) on another
        worker, which then becomes ours too: a browser's next connection may reach any."""
        if self.sessions.valid(token):
            return True
        if self.link is None or not token:
            return False
        found = await self.link.find_session(token)
        if found is not None:
            self.sessions.adopt(token, *found)
        return self.sessions.valid(token)

    def _throttled(self, request: HttpRequest) -> int | None:
        """Seconds this client must wait after too many failed sign-ins, or None."""
        return self.throttle.retry_after(client_address(request.client), time.monotonic())

    def _check(self, credential: str, request: HttpRequest) -> tuple[str, float] | None:
        """:meth:`_grant_for`, logged, with a failure counted against the client's address."""
        address = client_address(request.client)
        grant = self._grant_for(credential, request) if credential else None
        if grant is not None:
            self.throttle.succeeded(address)
            log.info("live trace login from %s", request.client or "?")
            return grant
        now = time.monotonic()
        self.throttle.failed(address, now)
        log.info("live trace login refused from %s", request.client or "?")
        wait = self.throttle.retry_after(address, now)
        if wait is not None:
            log.warning(
                "live trace: %d failed sign-ins from %s, refusing it for %d s",
                self.throttle.limit,
                address,
                wait,
            )
        return None

    def _grant_for(self, credential: str, request: HttpRequest) -> tuple[str, float] | None:
        """What ``credential`` proves: (access key, expiry in wall-clock seconds), or None.

        Only a live trace token counts: an access-key JWT whose audience is
        ``<endpoint>/livetrace``, lasting until its ``exp``. The raw key is refused, so
        nobody is tempted to send it over the network.
        """
        keys = self._service.settings.access_keys
        if credential.count(".") != 2:
            return None
        validator = self._service.validator
        scheme = "https" if self._service.settings.endpoint.startswith("https") else "http"
        for key in keys:
            try:
                claims = TokenValidator([key], validator.public_endpoint).decode(credential)
                validator.check_audience(claims, PATH, request.header("host"), scheme)
            except Unauthorized:
                continue
            expires = claims.get("exp")
            if not isinstance(expires, int | float):
                return key, math.inf
            # The same clock-skew allowance as the token check itself.
            return key, float(expires) + CLOCK_SKEW_SECONDS
        return None

    def _still_granted(self, key: str, expires: float) -> bool:
        """Whether a token-authenticated stream may go on: key configured, token not expired."""
        return time.time() < expires and key in self._service.settings.access_keys

    def _logged_in(self, key: str) -> HttpResponse:
        """Open a session and send the browser (back) to the viewer page."""
        token = self.sessions.create(key)
        secure = "; Secure" if self._service.settings.endpoint.startswith("https") else ""
        response = _redirect(PATH)
        response.headers.append(
            (
                "Set-Cookie",
                f"{COOKIE}={token}; Path={PATH}; Max-Age={int(SESSION_LIFETIME)}; HttpOnly; "
                f"SameSite=Strict{secure}",
            )
        )
        return response

    def _too_many(self, wait: int) -> HttpResponse:
        response = self._login_form(
            429, f"Too many failed sign-ins from your address. Try again in {wait} s."
        )
        response.headers.append(("Retry-After", str(wait)))
        return response

    def _login_form(self, status: int, error: str) -> HttpResponse:
        body = self._login.substitute(
            endpoint=html.escape(self._service.settings.endpoint),
            error=html.escape(error),
            error_class="error" if error else "error hidden",
        )
        return _html(status, body)


def _cookie(request: HttpRequest, name: str) -> str | None:
    for header in request.header_all("cookie"):
        for part in header.split(";"):
            key, _, value = part.strip().partition("=")
            if key == name:
                return value
    return None


def _html(status: int, body: str) -> HttpResponse:
    response = HttpResponse(status, body.encode("utf-8"), content_type="text/html; charset=utf-8")
    response.headers.extend(
        [
            ("Content-Security-Policy", CSP),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
            ("Cache-Control", "no-store"),
        ]
    )
    return response


def _redirect(location: str) -> HttpResponse:
    response = HttpResponse(303)
    response.headers.extend([("Location", location), ("Cache-Control", "no-store")])
    return response
