"""The upstream caller: CloudEvents over HTTP to the app server's event handlers (spec 5).

``connect`` and user events are blocking (their answers matter); ``connected`` and
``disconnected`` are fire-and-forget with bounded retries, and never hold up delivery. Every
handler URL is validated once with the abuse-protection OPTIONS request before first use.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from ..core.connection import CloseCode, Connection
from ..core.errors import InternalServerError, Throttled
from ..core.events import (
    SYSTEM_CONTENT_TYPE,
    ConnectResult,
    EventContext,
    EventHandlerSettings,
    EventKind,
    HubSettings,
    UpstreamRejected,
    cloud_event_headers,
    connect_body,
    origin_host,
    parse_connect_response,
    reply_message,
    updated_state,
    user_event_content_type,
)
from ..core.requests import SendEvent

if TYPE_CHECKING:
    from ..core.node import Node
    from .client_endpoint import Pending
    from .config import Settings

log = logging.getLogger("webpubsub.upstream")

RETRY_DELAYS = (1.0, 3.0, 5.0)  # non-blocking events: up to 4 attempts, as the emulator does
VALIDATION_FAILURE_TTL = 10.0


class UpstreamFailure(Exception):
    """A call that did not produce a usable answer (network error, timeout, bad status)."""


class Upstream:
    """Calls the event handlers configured for each hub."""

    def __init__(
        self,
        node: Node,
        settings: Settings,
        hub_settings: Callable[[str], HubSettings],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.node = node
        self.settings = settings
        self.hub_settings = hub_settings
        limits = settings.limits
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                limits.upstream_timeout, connect=min(10.0, limits.upstream_timeout)
            ),
            transport=transport,
            follow_redirects=False,
        )
        self.retry_delays = RETRY_DELAYS
        self._validated: dict[str, float] = {}  # validation URL -> expiry (inf when allowed)
        self._validating: dict[str, asyncio.Future[bool]] = {}
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._queues: dict[Connection, deque[SendEvent]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------

    def reset_validation(self) -> None:
        """Forget abuse-protection results (after a settings reload)."""
        self._validated.clear()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("upstream task failed", exc_info=task.exception())

    # -- connect (blocking) ---------------------------------------------------------------

    async def connect(self, pending: Pending) -> ConnectResult:
        """Call ``connect``; raises UpstreamRejected with the status for the client."""
        handler = pending.handler
        assert handler is not None
        ctx = EventContext(pending.hub, pending.connection_id, pending.user_id, None, None, 0)
        body = connect_body(
            pending.claims,
            pending.request.query,
            pending.request.headers,
            pending.offered,
        )
        try:
            response = await self._call(
                handler, ctx, "connect", EventKind.CONNECT, SYSTEM_CONTENT_TYPE, body
            )
        except UpstreamFailure as exc:
            raise UpstreamRejected(500, f"The connect event handler failed: {exc}") from None
        return parse_connect_response(response.status_code, response.content, pending.offered)

    # -- connected / disconnected (non-blocking) -----------------------------------------

    def connected(self, conn: Connection) -> None:
        handler = self.hub_settings(conn.hub).handler_for("connected", EventKind.CONNECTED)
        if handler is not None:
            ctx = self._context(conn)
            self._spawn(self._notify(handler, ctx, EventKind.CONNECTED, b"{}"))

    def disconnected(self, conn: Connection, reason: str) -> None:
        self._queues.pop(conn, None)
        handler = self.hub_settings(conn.hub).handler_for("disconnected", EventKind.DISCONNECTED)
        if handler is not None:
            body = json.dumps({"reason": reason}).encode()
            self._spawn(self._notify(handler, self._context(conn), EventKind.DISCONNECTED, body))

    async def _notify(
        self, handler: EventHandlerSettings, ctx: EventContext, kind: EventKind, body: bytes
    ) -> None:
        for attempt, delay in enumerate((*self.retry_delays, None)):
            try:
                response = await self._call(
                    handler, ctx, kind.value, kind, SYSTEM_CONTENT_TYPE, body
                )
            except UpstreamFailure as exc:
                failure = str(exc)
            else:
                if response.status_code < 500 and response.status_code != 408:
                    if response.status_code >= 300:
                        log.warning(
                            "%s event for %s answered %d",
                            kind.value,
                            ctx.connection_id,
                            response.status_code,
                        )
                    return
                failure = f"status {response.status_code}"
            if delay is None:
                log.warning(
                    "giving up %s event for %s after %d attempts: %s",
                    kind.value,
                    ctx.connection_id,
                    attempt + 1,
                    failure,
                )
                return
            await asyncio.sleep(delay)

    # -- user events (blocking, in order per connection) ---------------------------------

    def user_event(self, conn: Connection, request: SendEvent) -> None:
        """Queue a user event; events of one connection go upstream one at a time, in order.

        Raises Throttled when the connection already has ``limits.max_pending_events``
        events waiting: a client must not queue unbounded work behind a slow handler.
        """
        queue = self._queues.get(conn)
        if queue is not None:
            limit = self.settings.limits.max_pending_events
            if len(queue) >= limit:
                raise Throttled(
                    f"{limit} events are already waiting for the event handler; retry later."
                )
            queue.append(request)
            return
        self._queues[conn] = deque([request])
        self._spawn(self._drain(conn))

    async def _drain(self, conn: Connection) -> None:
        queue = self._queues.get(conn)
        while queue:
            request = queue[0]
            try:
                await self._user_event(conn, request)
            finally:
                queue.popleft()
            if self._queues.get(conn) is not queue:
                return
        self._queues.pop(conn, None)

    async def _user_event(self, conn: Connection, request: SendEvent) -> None:
        kind = EventKind.USER
        handler = self.hub_settings(conn.hub).handler_for(request.event, kind)
        error: str | None = None
        if handler is None:
            error = f"No event handler is configured for the event '{request.event}'."
        else:
            try:
                response = await self._call(
                    handler,
                    self._context(conn),
                    request.event,
                    kind,
                    user_event_content_type(request.data_type),
                    request.data,
                )
            except UpstreamFailure as exc:
                error = f"The event handler failed: {exc}"
            else:
                conn.state = updated_state(conn.state, response.headers)
                if 200 <= response.status_code < 300:
                    reply = None
                    if response.status_code == 200:
                        reply = reply_message(
                            response.headers.get("content-type"), response.content
                        )
                    if reply is not None and not conn.closed:
                        conn.deliver(conn.codec.encode_message(reply))
                    if request.ack_id is not None:
                        self.node.ack(conn, request.ack_id, None)
                    return
                error = f"The event handler answered {response.status_code}."
        log.info("user event %r of %s failed: %s", request.event, conn.connection_id, error)
        if not conn.codec.is_pubsub:
            # A simple client whose message cannot be handled is dropped (spec 4.2).
            self.node.close(conn, CloseCode.INTERNAL_ERROR, "The event could not be handled.")
        elif request.ack_id is not None:
            self.node.ack(conn, request.ack_id, InternalServerError(error))

    # -- HTTP -------------------------------------------------------------------------------

    def _context(self, conn: Connection) -> EventContext:
        conn.event_id += 1
        return EventContext(
            conn.hub,
            conn.connection_id,
            conn.user_id,
            conn.subprotocol,
            conn.state,
            conn.event_id,
        )

    async def _call(
        self,
        handler: EventHandlerSettings,
        ctx: EventContext,
        event: str,
        kind: EventKind,
        content_type: str,
        body: bytes,
    ) -> httpx.Response:
        if not await self._validate(handler, ctx.hub):
            raise UpstreamFailure("the handler did not pass abuse protection validation")
        headers = cloud_event_headers(
            ctx,
            event,
            kind,
            keys=self.settings.access_keys,
            origin=origin_host(self.settings.endpoint),
            content_type=content_type,
        )
        if handler.auth_header is not None:
            headers[handler.auth_header[0]] = handler.auth_header[1]
        url = handler.url(ctx.hub, event)
        slots = self._slots.get(ctx.hub.lower())
        if slots is None:
            slots = self._slots[ctx.hub.lower()] = asyncio.Semaphore(
                self.settings.limits.upstream_concurrency
            )
        started = time.perf_counter()
        observer = self.node.observer
        async with slots:
            try:
                response = await self.client.post(url, content=body, headers=headers)
            except httpx.TimeoutException:
                log.warning("%s event to %s timed out", event, url)
                observer.upstream_call(
                    ctx.hub, event, url, None, time.perf_counter() - started, "timeout"
                )
                raise UpstreamFailure("timed out") from None
            except httpx.HTTPError as exc:
                log.warning("%s event to %s failed: %s", event, url, exc)
                observer.upstream_call(
                    ctx.hub, event, url, None, time.perf_counter() - started, type(exc).__name__
                )
                raise UpstreamFailure(type(exc).__name__) from None
        observer.upstream_call(
            ctx.hub, event, url, response.status_code, time.perf_counter() - started, None
        )
        if response.status_code >= 400:
            log.warning("%s event to %s answered %d", event, url, response.status_code)
        log.debug(
            "%s event to %s -> %d (%.1f ms)",
            event,
            url,
            response.status_code,
            (time.perf_counter() - started) * 1000,
        )
        return response

    async def _validate(self, handler: EventHandlerSettings, hub: str) -> bool:
        """Abuse protection (spec 5.2): OPTIONS with WebHook-Request-Origin, cached."""
        url = handler.url(hub, "validate")
        expiry = self._validated.get(url)
        if expiry is not None and (expiry == float("inf") or expiry > time.monotonic()):
            return expiry == float("inf")
        waiting = self._validating.get(url)
        if waiting is not None:
            return await asyncio.shield(waiting)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._validating[url] = future
        try:
            allowed = await self._probe(handler, url)
        finally:
            self._validating.pop(url, None)
        self._validated[url] = (
            float("inf") if allowed else time.monotonic() + VALIDATION_FAILURE_TTL
        )
        future.set_result(allowed)
        return allowed

    async def _probe(self, handler: EventHandlerSettings, url: str) -> bool:
        origin = origin_host(self.settings.endpoint)
        headers = {"WebHook-Request-Origin": origin, "ce-awpsversion": "1.0"}
        if handler.auth_header is not None:
            headers[handler.auth_header[0]] = handler.auth_header[1]
        try:
            response = await self.client.options(url, headers=headers)
            if response.status_code == 404:
                response = await self.client.get(url, headers=headers)
        except httpx.HTTPError as exc:
            log.warning(
                "event handler %s refused: validation request failed (%s)", url, type(exc).__name__
            )
            return False
        allowed = response.headers.get("webhook-allowed-origin", "")
        names = {name.strip().lower() for name in allowed.split(",")}
        if 200 <= response.status_code < 300 and ("*" in names or origin.lower() in names):
            log.info("event handler %s validated", url)
            return True
        log.warning(
            "event handler %s refused: validation answered %d with WebHook-Allowed-Origin %r "
            "(expected '*' or %r); its events are not sent",
            url,
            response.status_code,
            allowed,
            origin,
        )
        return False
