"""The service: one port serving the REST API and the client endpoint, over one node."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..auth.tokens import TokenValidator, bearer_token
from ..core import commands as c
from ..core.commands import Command
from ..core.connection import CloseCode, NullTransport
from ..core.errors import (
    BadRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    RequestError,
    Unauthorized,
)
from ..core.events import HubSettings
from ..core.node import Node
from ..engine.memory import Directory, MemoryDirectory
from ..engine.redis import RedisEngine
from ..protocols import tunnel as tunnel_frames
from ..protocols.mqtt.connection import MqttConnection
from . import openapi, ops, rest
from .client_endpoint import ClientEndpoint
from .config import Settings
from .connection import Flusher, ServiceProtocol
from .http import HttpRequest, HttpResponse
from .socketio import SocketIOEndpoint
from .tunnel import Tunnels, request_of
from .upstream import Upstream
from .workers import WorkerIdentity

log = logging.getLogger("webpubsub.server")

Page = Callable[[HttpRequest], Awaitable[HttpResponse]]
access_log = logging.getLogger("webpubsub.access")


class Service:
    """A running (or ready to run) service: settings, node, listening socket, connections."""

    def __init__(
        self, settings: Settings, node: Node | None = None, worker: WorkerIdentity | None = None
    ) -> None:
        settings.ensure_key()
        self.worker = worker  # one of the processes of serve --workers N, sharing the port
        self.settings = settings
        limits = settings.limits
        self.node = node or Node(
            max_groups_per_connection=limits.max_groups_per_connection,
            max_group_name_length=limits.max_group_name_length,
            recovery_window=limits.recovery_window,
            message_rate=limits.client_message_rate,
            message_burst=limits.client_message_burst,
        )
        self.protocols: set[ServiceProtocol] = set()
        # MQTT clients, whose keep alive is checked each tick (mqtt spec 3.8).
        self.mqtt_clients: set[MqttConnection] = set()
        self._no_protocols: asyncio.Event | None = None  # set while stopping, when all are gone
        # Extra HTTP endpoints by exact path (metrics, health, live trace), checked before REST.
        self.pages: dict[str, Page] = {}
        self.engine: RedisEngine | None = None
        self.directory: Directory = MemoryDirectory(self.node)
        self._server: asyncio.Server | None = None
        self._keep_alive: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ops: ops.Operability | None = None
        self.flusher: Flusher
        self.validator: TokenValidator
        self.client_endpoint: ClientEndpoint

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None, "the service is not started"
        return self._loop

    @property
    def endpoint(self) -> str:
        return self.settings.endpoint

    @property
    def connection_string(self) -> str:
        return self.settings.connection_string

    async def start(self) -> None:
        """Bind the port and start serving (``port=0`` picks a free port)."""
        self._loop = asyncio.get_running_loop()
        self.flusher = Flusher(self._loop)
        self.node.batcher = self.flusher  # hub-wide broadcasts: one write per connection
        tls = self._tls_context()
        self._server = await self._loop.create_server(
            lambda: ServiceProtocol(self),
            self.settings.host,
            self.settings.port,
            reuse_address=True,
            # Workers bind the same port; the kernel spreads new connections over them.
            reuse_port=self.worker is not None,
            backlog=4096,
            start_serving=False,
            ssl=tls,
            ssl_handshake_timeout=self.settings.limits.request_timeout if tls else None,
        )
        if self.settings.port == 0:
            self.settings.port = self._server.sockets[0].getsockname()[1]
        self.validator = TokenValidator(self.settings.access_keys, self.settings.endpoint)
        scheme = "https" if self.settings.endpoint.startswith("https") else "http"
        self.client_endpoint = ClientEndpoint(
            self.node, self.validator, self.settings.limits, self.hub_settings, scheme
        )
        self.upstream = Upstream(self.node, self.settings, self.hub_settings)
        self.tunnels = Tunnels(self)
        self.socketio = SocketIOEndpoint(self)
        self.upstream.tunnels = self.tunnels
        self.node.on_user_event = self.upstream.user_event
        self.node.on_disconnected.append(self.upstream.disconnected)
        self.node.on_presence = self.upstream.presence
        self.node.on_invoke = self.upstream.invoke
        self.log_settings()
        if self.settings.redis_url:
            cluster = self.settings.cluster
            engine = RedisEngine(
                self.settings.redis_url,
                self.node,
                node_ttl=cluster.node_ttl,
                heartbeat_interval=cluster.heartbeat_interval,
                timeout=cluster.redis_timeout,
                publish_timeout=cluster.publish_timeout,
                retry_window=self.settings.limits.recovery_window,
            )
            engine.local_connections = lambda: len(self.protocols)
            engine.tunnel_subs = self.tunnels.registry.live_subs
            engine.on_rpc = self._serve_rpc
            await engine.start()
            self.engine = engine
            self.client_endpoint.peer_hub_connections = engine.peer_hub_connections
            self.node.engine = engine
            self.directory = engine
        self._next_ping = self.loop.time() + self.settings.limits.keep_alive_interval
        self._schedule_keep_alive()
        self.ops = ops.install(self)
        await self.ops.start()
        openapi.install(self)
        await self._server.start_serving()

    def _tls_context(self) -> ssl.SSLContext | None:
        """The server-side TLS context when a certificate is configured, else None."""
        tls = self.settings.tls
        if not tls.enabled:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(tls.certfile or "", tls.keyfile)
        return context

    @property
    def scheme(self) -> str:
        """``https`` when this port serves TLS, else ``http``."""
        return "https" if self.settings.tls.enabled else "http"

    def peer_connections(self) -> int:
        """TCP connections of the other nodes of the cluster (limits are service-wide)."""
        return self.engine.peer_connections() if self.engine is not None else 0

    async def execute(self, hub: str, command: Command, *, settle: bool = True) -> None:
        """Carry out a REST command everywhere; in a cluster, wait until Redis has it.
        ``settle``: a broadcast also waits until this node's connections have it.

        Raises ServiceUnavailable (503) when the cluster's Redis cannot be reached.
        """
        self._check_limits(command)
        engine = self.engine
        if engine is None:
            self.node.execute(hub, command)
            if settle:
                await self._handed_over(hub, command)
            return
        engine.check_ready()
        self.node.execute(hub, command)
        # A send's publish is queued in order and retried until written (no wait, so a burst
        # fans out together); a membership change waits until Redis has it (read-your-writes).
        await engine.commit(hub, command)
        if settle:
            await self._handed_over(hub, command)

    async def _handed_over(self, hub: str, command: Command) -> None:
        """Back-pressure (issue 16): a broadcast to a whole hub is answered once every
        connection of this node has it queued or written (at most one round of the hub's
        writes, core/hub.py Batcher), so REST never takes broadcasts faster than this node
        delivers them and the hub's queue stays as long as the requests in flight."""
        if isinstance(command, c.Send) and isinstance(command.target, c.ToAll):
            waiter = self.flusher.written(hub)
            if waiter is not None:
                await waiter

    async def _serve_rpc(self, call: dict[str, Any]) -> dict[str, Any]:
        """A call another node relays here: a broadcast with acknowledgements to this node's
        Socket.IO clients, or an exchange on one of this node's app-server tunnels."""
        if call.get("kind") == "invoke":
            return await self.socketio.serve_remote_invoke(call)
        return await self.tunnels.serve_remote(call)

    def _check_limits(self, command: Command) -> None:
        """The configurable limits on what a REST command may carry or create.

        REST paths are validated against the spec's maxima by the routes; these knobs may
        lower them (the message size, the length of a group name that gets members).
        """
        limits = self.settings.limits
        groups: tuple[str, ...] = ()
        match command:
            case c.Send(_, message) if len(message.data) > limits.max_message_size:
                raise PayloadTooLarge(
                    f"The message is larger than {limits.max_message_size} bytes."
                )
            case c.AddToGroup(_, group):
                groups = (group,)
            case c.AddToGroups(many, _):
                groups = many
        for group in groups:
            problem = self.node.group_name_problem(group)
            if problem:
                raise BadRequest(problem, code="Error.InvalidGroupName", target="group")

    def ready(self) -> tuple[bool, str]:
        """Whether this node can serve: listening, and in a cluster, Redis reachable."""
        if self._server is None or not self._server.is_serving():
            return False, "not listening"
        if self.engine is not None and not self.engine.healthy:
            return False, self.engine.problem
        return True, "ok"

    def hub_settings(self, hub: str) -> HubSettings:
        return self.settings.hub(hub)

    def reload(self, settings: Settings) -> None:
        """Apply reloadable settings (access keys, hub settings) without a restart."""
        if settings.access_keys:
            self.settings.access_keys[:] = settings.access_keys
        self.settings.hubs = settings.hubs
        self.upstream.reset_validation()
        log.info("settings reloaded")
        self.log_settings()

    def log_settings(self) -> None:
        hubs = self.settings.hubs
        if not hubs:
            log.info("hub settings: none (no event handlers, anonymous clients refused)")
        for name, hub in sorted(hubs.items()):
            log.info("hub settings [%s]: %s", name, hub.describe())

    async def stop(self, reason: str = "Service is shutting down.") -> None:
        """Drain and stop: stop accepting; close every client with 1001 (so SDKs reconnect
        elsewhere); let REST calls in flight finish; after ``shutdown_grace`` seconds,
        abort whatever is left."""
        if self._server is not None:
            self._server.close()
        if self._keep_alive is not None:
            self._keep_alive.cancel()
        self._no_protocols = asyncio.Event()
        self.node.close_all(CloseCode.GOING_AWAY, reason)
        self.tunnels.close_all(reason)  # the SDKs reconnect, to another node if there is one
        for proto in list(self.protocols):
            proto.drain()
        if self.protocols:
            grace = self.settings.limits.shutdown_grace
            try:
                await asyncio.wait_for(self._no_protocols.wait(), grace)
            except TimeoutError:
                log.warning("shutdown grace over: aborting %d connection(s)", len(self.protocols))
        for proto in list(self.protocols):
            if proto.transport is not None:
                proto.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        await self.upstream.close()
        if self.ops is not None:
            await self.ops.close()
        if self.engine is not None:
            await self.engine.close()
            self.engine = None
            self.node.engine = None

    def protocol_closed(self, proto: ServiceProtocol) -> None:
        """A TCP connection is gone (called by the protocol)."""
        self.protocols.discard(proto)
        if not self.protocols and self._no_protocols is not None:
            self._no_protocols.set()

    @property
    def draining(self) -> bool:
        """True once :meth:`stop` began."""
        return self._no_protocols is not None

    def _schedule_keep_alive(self) -> None:
        interval = min(1.0, self.settings.limits.keep_alive_interval)
        self._keep_alive = self.loop.call_later(interval, self._tick)

    def _tick(self) -> None:
        """Once a second (or each keep-alive interval, if shorter): expire reliable
        connections past their window; when due, ping clients and cut the silent ones."""
        now = self.loop.time()
        self.node.expire(now)
        for mqtt_client in list(self.mqtt_clients):
            if mqtt_client.tick(now):
                self.mqtt_clients.discard(mqtt_client)
        self.tunnels.tick(now)
        self.socketio.tick(now)
        if now >= self._next_ping:
            self._next_ping = now + self.settings.limits.keep_alive_interval
            for proto in list(self.protocols):
                proto.keep_alive(now)
        self._schedule_keep_alive()

    # -- HTTP -------------------------------------------------------------------------------

    def base_url(self, request: HttpRequest) -> str:
        """The scheme://host[:port] the caller used (for absolute ``nextLink`` URLs)."""
        if self.settings.public_endpoint:
            return self.settings.endpoint
        host = request.header("host")
        return f"{self.scheme}://{host}" if host else self.settings.endpoint

    async def handle_http(self, request: HttpRequest) -> HttpResponse:
        """Answer one non-upgrade HTTP request."""
        return await self._answer(request, self._route_http)

    async def handle_tunnel_request(
        self, hub: str, sub: str, message: tunnel_frames.HttpRequest
    ) -> HttpResponse:
        """Answer a REST call an app server sent over its tunnel (socketio spec 4.4): the
        tunnel is the credential, for its own hub only; ``:invoke`` is served here too."""
        request = request_of(message, sub)

        async def route(request: HttpRequest, operation: list[str]) -> HttpResponse:
            if len(request.body) > self.settings.limits.max_body_size:
                raise PayloadTooLarge(
                    f"The request body is larger than {self.settings.limits.max_body_size} bytes."
                )
            found, params = rest.resolve(request.method, request.path, tunnel=True)
            operation[0] = found.operation
            named = params.get("hub")
            if named is not None and named.lower() != hub:
                raise TunnelForbidden(
                    f"This tunnel serves hub '{hub}' only.", code="Error.Forbidden"
                )
            return await found.handler(rest.Call(request, params, self))

        return await self._answer(request, route)

    async def _route_http(self, request: HttpRequest, operation: list[str]) -> HttpResponse:
        page = self.pages.get(request.path)
        if page is not None:
            return await page(request)
        if self.tunnels.matches(request.path):
            return _upgrade_required()
        if self.socketio.matches(request.path):
            return await self.socketio.handle(request)
        if self.client_endpoint.matches(request.path):
            result = self.client_endpoint.handshake(request, NullTransport())
            return result if isinstance(result, HttpResponse) else _upgrade_required()
        route, params = rest.resolve(request.method, request.path)
        operation[0] = route.operation
        if route.auth:
            self._authenticate(request)
        return await route.handler(rest.Call(request, params, self))

    async def _answer(
        self,
        request: HttpRequest,
        route: Callable[[HttpRequest, list[str]], Awaitable[HttpResponse]],
    ) -> HttpResponse:
        """Run ``route`` and turn every error into its response; count and log the call."""
        started = time.perf_counter()
        operation = ["-"]
        try:
            response = await route(request, operation)
        except MethodNotAllowed as exc:
            response = HttpResponse.error(exc)
            response.headers.append(("Allow", ", ".join(_allowed_methods(request.path))))
        except RequestError as exc:
            response = HttpResponse.error(exc)
        except Exception:
            log.exception("unexpected error serving %s %s", request.method, request.path)
            response = HttpResponse.json(
                500, {"code": "Error.InternalServerError", "message": "Internal server error."}
            )
            response.headers.append(("x-ms-error-code", "Error.InternalServerError"))
        elapsed = time.perf_counter() - started
        self.node.observer.rest_call(
            request.method, request.path, operation[0], response.status, elapsed
        )
        if access_log.isEnabledFor(logging.DEBUG):
            access_log.debug(
                "%s %s %s -> %d (%.1f ms)",
                request.method,
                request.path,
                operation[0],
                response.status,
                elapsed * 1000,
            )
        return response

    def _authenticate(self, request: HttpRequest) -> None:
        if len(request.header_all("authorization")) > 1:
            raise Unauthorized(
                "Send one Authorization header, not several.",
                code="Error.Unauthorized.AmbiguousToken",
            )
        token = bearer_token(request.header("authorization"))
        if token is None:
            raise Unauthorized(
                "An Authorization: Bearer <access-key JWT> header is required.",
                code="Error.Unauthorized.NoToken",
            )
        self.validator.authenticate(token, request.path, request.header("host"), self.scheme)


class TunnelForbidden(RequestError):
    """403: an app server's tunnel asked for another hub."""

    status = 403
    default_code = "Error.Forbidden"


def _allowed_methods(path: str) -> list[str]:
    """The methods the route table serves at ``path`` (the ``Allow`` header of a 405)."""
    segments = rest.path_segments(path)
    return sorted({route.method for route in rest.ROUTES if route.match(segments) is not None})


def _upgrade_required() -> HttpResponse:
    error = RequestError(
        "This is a WebSocket endpoint: connect with a WebSocket client.",
        code="Error.UpgradeRequired",
        status=426,
    )
    response = HttpResponse.error(error)
    response.headers.append(("Upgrade", "websocket"))
    return response
