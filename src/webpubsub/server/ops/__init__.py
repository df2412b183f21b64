"""Operability: metrics, health checks, the Live Trace page and connection logs.

:func:`install` wires all of it into a started :class:`~webpubsub.server.app.Service`: it
registers the observers with the node and the extra HTTP pages by exact path.

============================  ==================================================================
``GET /metrics``              Prometheus text format (``prometheus-client``)
``GET /healthz``              200 while the process answers
``GET /readyz``               200 when ready to serve; 503 while stopping or, in a cluster,
                              while Redis is unreachable
``/livetrace`` and below      the Live Trace viewer (see ``_livetrace``)
============================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from ..http import HttpRequest, HttpResponse
from ._health import ClusterState, Health, method_not_allowed
from ._livetrace import LiveTracePages, Sessions
from ._logs import LOG_FORMATS, ConnectionLog, JsonFormatter, make_formatter
from ._metrics import Metrics
from ._redact import RedactingFilter, redact
from ._throttle import LoginThrottle
from ._trace import Category, LiveTrace, TraceFilter, Viewer
from ._workers import WorkerLink, merge_expositions

if TYPE_CHECKING:
    from ..app import Service

__all__ = [
    "LOG_FORMATS",
    "Category",
    "ClusterState",
    "ConnectionLog",
    "JsonFormatter",
    "LiveTrace",
    "LiveTracePages",
    "LoginThrottle",
    "Metrics",
    "Operability",
    "RedactingFilter",
    "Sessions",
    "TraceFilter",
    "Viewer",
    "WorkerLink",
    "install",
    "make_formatter",
    "redact",
]


class Operability:
    """The metrics, health, live trace and connection log of one service."""

    def __init__(self, service: Service) -> None:
        node = service.node
        self.service = service
        self.cluster = ClusterState(service)
        self.trace = LiveTrace(node.observer)
        self.health = Health(service)
        self.metrics = Metrics(node, self._state_metrics)
        self.connection_log = ConnectionLog()
        # One of several workers on this port (serve --workers N): see the others too.
        self.link: WorkerLink | None = None
        worker = service.worker
        if worker is not None:
            self.trace.worker = worker.index
            self.link = WorkerLink(
                worker.index, worker.directory, lambda: self.metrics.exposition()[0], self.trace
            )
        self.live_trace = LiveTracePages(service, self.trace, self.link)
        if self.link is not None:
            self.link.sessions = self.live_trace.sessions

    async def start(self) -> None:
        if self.link is not None:
            await self.link.start()

    async def close(self) -> None:
        if self.link is not None:
            await self.link.close()

    def install(self) -> None:
        """Register the observers with the node and the pages with the service."""
        observers = self.service.node.observer
        observers.add(self.metrics)
        observers.add(self.connection_log)
        pages = self.service.pages
        pages["/metrics"] = self.metrics_page
        pages["/healthz"] = self.health.healthz
        pages["/readyz"] = self.health.readyz
        pages.update(self.live_trace.routes())

    async def metrics_page(self, request: HttpRequest) -> HttpResponse:
        """``GET /metrics``: every metric in the Prometheus text format."""
        if request.method not in ("GET", "HEAD"):
            return method_not_allowed("GET, HEAD")
        body, content_type = self.metrics.exposition()
        if self.link is not None:
            families = merge_expositions([body, *await self.link.expositions()])
            body, content_type = generate_latest(_Families(families)), CONTENT_TYPE_LATEST
        return HttpResponse(200, body, content_type=content_type)

    def _state_metrics(self) -> Iterable[Metric]:
        viewers = GaugeMetricFamily("webpubsub_livetrace_viewers", "Live trace streams open now.")
        viewers.add_metric([], len(self.trace.viewers))
        observing = GaugeMetricFamily(
            "webpubsub_livetrace_observing",
            "1 while the live trace observes the node (only when someone watches).",
        )
        observing.add_metric([], 1 if self.trace.observing else 0)
        dropped = GaugeMetricFamily(
            "webpubsub_livetrace_dropped_records",
            "Records dropped because a current viewer fell behind.",
        )
        dropped.add_metric([], self.trace.dropped)
        yield from (viewers, observing, dropped)
        yield from self._tunnel_metrics()
        yield from self.cluster.metrics()
        if self.link is not None:
            mine = GaugeMetricFamily(
                "webpubsub_worker_connections",
                "Client connections open on each worker of this machine (serve --workers).",
                labels=["worker"],
            )
            count = sum(len(hub.connections) for hub in self.service.node.hubs.values())
            mine.add_metric([str(self.link.index)], count)
            yield mine

    def _tunnel_metrics(self) -> Iterable[Metric]:
        """The app servers' tunnels (docs/socketio.md) and the connections pinned to them."""
        tunnels = GaugeMetricFamily(
            "webpubsub_tunnels", "App-server tunnel sockets open now, by hub.", labels=["hub"]
        )
        by_hub: dict[str, int] = {}
        for session in self.service.tunnels.sessions:
            by_hub[session.hub] = by_hub.get(session.hub, 0) + 1
        for hub, count in sorted(by_hub.items()):
            tunnels.add_metric([hub], count)
        pinned = GaugeMetricFamily(
            "webpubsub_tunnel_pinned_connections",
            "Connections whose events go to an app server over its tunnel.",
        )
        pinned.add_metric([], len(self.service.tunnels.registry.pins()))
        yield from (tunnels, pinned)


class _Families:
    """Metric families already collected, for ``generate_latest``."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def install(service: Service) -> Operability:
    """Add metrics, health checks, live trace and connection logs to a started service.

    Call it once, at the end of ``Service.start()`` (the pages need the token validator).
    """
    ops = Operability(service)
    ops.install()
    return ops
