"""Prometheus metrics of one service: counters fed by an observer, gauges read at scrape time.

Each service has its own :class:`~prometheus_client.CollectorRegistry` (no process-wide
registry), so two services in one test process keep separate numbers. Counters and
histograms are updated from the observer hooks, with each label combination's child cached
so a hook costs a dict lookup and an increment. Gauges that describe state (connections,
reliable buffers, cluster) are computed from the node when Prometheus scrapes, so they can
never drift from the truth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ... import __version__
from ...core import commands as c
from ...core.events import SYSTEM_EVENTS
from ...core.observe import Observer
from ._trace import request_kind, target_kind

if TYPE_CHECKING:
    from ...core.connection import Connection
    from ...core.node import Node
    from ...core.requests import ClientRequest

OTHER = "other"
"""The label value that stands for every value past a label's cardinality cap."""

MAX_HUB_LABELS = 1000
"""Distinct hubs that get their own counter series (clients can name hubs freely)."""

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
UPSTREAM_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class LabelCap:
    """Bounds the distinct values of one label: past ``limit``, new values become ``other``.

    Label values that clients choose (hub names) would otherwise let a client grow the
    service's memory and the scrape without bound.
    """

    __slots__ = ("_seen", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(value)
        return value


class Metrics(Observer):
    """The service's metrics: an observer for events, plus a scrape-time state collector.

    Args:
        node: the node whose state the gauges read.
        extra_state: more scrape-time gauges (the live trace's viewer count, cluster state).
        process: also export the ``process_*`` and ``python_info`` metrics.
    """

    def __init__(
        self,
        node: Node,
        extra_state: Callable[[], Iterable[Metric]] | None = None,
        *,
        process: bool = True,
    ) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self._hub = LabelCap(MAX_HUB_LABELS)
        self.connections_opened = Counter(
            "webpubsub_connections_opened",
            "Client connections accepted.",
            ["hub", "subprotocol"],
            registry=registry,
        )
        self.connections_closed = Counter(
            "webpubsub_connections_closed",
            "Client connections ended (reliable ones: once recovery gave up).",
            ["hub", "subprotocol"],
            registry=registry,
        )
        self.connections_moved = Counter(
            "webpubsub_connections_moved",
            "Reliable connections that recovered through another node: direction out (from "
            "this node) or in (to it).",
            ["hub", "direction"],
            registry=registry,
        )
        self.messages_in = Counter(
            "webpubsub_messages_received",
            "Messages received from clients, by client message type.",
            ["hub", "kind"],
            registry=registry,
        )
        self.bytes_in = Counter(
            "webpubsub_received_bytes",
            "Bytes of client messages received (WebSocket payloads).",
            ["hub", "kind"],
            registry=registry,
        )
        self.sends = Counter(
            "webpubsub_sends",
            "Send commands applied on this node, by target kind.",
            ["hub", "kind"],
            registry=registry,
        )
        self.messages_out = Counter(
            "webpubsub_messages_sent",
            "Messages delivered to local connections (one per recipient), by target kind.",
            ["hub", "kind"],
            registry=registry,
        )
        self.bytes_out = Counter(
            "webpubsub_sent_bytes",
            "Payload bytes delivered to local connections (payload size times recipients).",
            ["hub", "kind"],
            registry=registry,
        )
        self.commands = Counter(
            "webpubsub_commands",
            "Commands other than sends (group changes, closes, permissions) applied here.",
            ["hub", "command"],
            registry=registry,
        )
        self.rest_requests = Counter(
            "webpubsub_rest_requests",
            "HTTP requests answered, by REST operation (other: pages, unknown paths) and status.",
            ["operation", "status"],
            registry=registry,
        )
        self.rest_latency = Histogram(
            "webpubsub_rest_request_duration_seconds",
            "Time to answer an HTTP request, by REST operation.",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_calls = Counter(
            "webpubsub_upstream_calls",
            "Event handler calls, by event (user events as 'user') and status "
            "(HTTP status, or 'error').",
            ["event", "status"],
            registry=registry,
        )
        self.invocations = Counter(
            "webpubsub_invocations",
            "Client invocations (invoke) answered, by outcome: success, an error name "
            "(Timeout, NotFound, BadRequest, Throttled...) or cancelled.",
            ["hub", "outcome"],
            registry=registry,
        )
        self.invocation_latency = Histogram(
            "webpubsub_invocation_duration_seconds",
            "Time from an invoke to its invokeResponse (the event handler's call).",
            ["hub"],
            buckets=UPSTREAM_BUCKETS,
            registry=registry,
        )
        self.streams = Counter(
            "webpubsub_group_streams",
            "Group streams opened, and ended by result: ok or the error name (IdleTimeout, "
            "UserError, Cancelled, Forbidden...).",
            ["hub", "event", "result"],
            registry=registry,
        )
        self.upstream_latency = Histogram(
            "webpubsub_upstream_call_duration_seconds",
            "Time an event handler call took, by event.",
            ["event"],
            buckets=UPSTREAM_BUCKETS,
            registry=registry,
        )
        self.slow_consumers = Counter(
            "webpubsub_slow_consumer_closes",
            "Connections cut because too many bytes waited to be written to them.",
            ["hub"],
            registry=registry,
        )
        registry.register(_StateCollector(node, extra_state))
        if process:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
        # Label children by label values: a hook then costs one dict lookup.
        self._children: dict[tuple[object, ...], Counter] = {}
        self._histograms: dict[tuple[object, ...], Histogram] = {}

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition format and its content type, for ``GET /metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def _counter(self, metric: Counter, *labels: str) -> Counter:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _histogram(self, metric: Histogram, label: str) -> Histogram:
        key = (id(metric), label)
        child = self._histograms.get(key)
        if child is None:
            child = self._histograms[key] = metric.labels(label)
        return child

    # -- observer hooks --------------------------------------------------------------------

    def connection_opened(self, conn: Connection, peer: str) -> None:
        hub = self._hub(conn.hub)
        self._counter(self.connections_opened, hub, conn.subprotocol or "none").inc()

    def connection_closed(self, conn: Connection, reason: str) -> None:
        hub = self._hub(conn.hub)
        self._counter(self.connections_closed, hub, conn.subprotocol or "none").inc()

    def invocation_done(self, conn: Connection, event: str, outcome: str, seconds: float) -> None:
        hub = self._hub(conn.hub)
        self._counter(self.invocations, hub, outcome).inc()
        if outcome not in ("cancelled",) and seconds > 0:
            self._histogram(self.invocation_latency, hub).observe(seconds)

    def stream_changed(
        self, conn: Connection, group: str, stream_id: str, opened: bool, error: str | None
    ) -> None:
        hub = self._hub(conn.hub)
        if opened:
            self._counter(self.streams, hub, "opened", "").inc()
        else:
            self._counter(self.streams, hub, "ended", error or "ok").inc()

    def connection_moved(self, conn: Connection, arrived: bool) -> None:
        hub = self._hub(conn.hub)
        self._counter(self.connections_moved, hub, "in" if arrived else "out").inc()

    def request_received(self, conn: Connection, request: ClientRequest, size: int) -> None:
        hub = self._hub(conn.hub)
        kind = request_kind(request)
        self._counter(self.messages_in, hub, kind).inc()
        self._counter(self.bytes_in, hub, kind).inc(size)

    def command_applied(self, hub: str, command: c.Command, recipients: int) -> None:
        hub = self._hub(hub)
        if isinstance(command, c.Send):
            kind = target_kind(command.target)
            self._counter(self.sends, hub, kind).inc()
            if recipients:
                self._counter(self.messages_out, hub, kind).inc(recipients)
                self._counter(self.bytes_out, hub, kind).inc(recipients * len(command.message.data))
            return
        self._counter(self.commands, hub, type(command).__name__).inc()

    def rest_call(
        self, method: str, path: str, operation: str, status: int, seconds: float
    ) -> None:
        operation = OTHER if operation == "-" else operation
        self._counter(self.rest_requests, operation, str(status)).inc()
        self._histogram(self.rest_latency, operation).observe(seconds)

    def upstream_call(
        self, hub: str, event: str, url: str, status: int | None, seconds: float, error: str | None
    ) -> None:
        # User event names are chosen by clients: one series for all of them.
        label = event if event in SYSTEM_EVENTS else "user"
        self._counter(self.upstream_calls, label, "error" if status is None else str(status)).inc()
        self._histogram(self.upstream_latency, label).observe(seconds)

    def slow_consumer(self, conn: Connection, buffered: int) -> None:
        self._counter(self.slow_consumers, self._hub(conn.hub)).inc()


class _StateCollector(Collector):
    """Gauges computed from the node at scrape time (on the service's event loop)."""

    def __init__(self, node: Node, extra: Callable[[], Iterable[Metric]] | None) -> None:
        self._node = node
        self._extra = extra

    def collect(self) -> Iterable[Metric]:
        node = self._node
        connections = GaugeMetricFamily(
            "webpubsub_connections",
            "Client connections open on this node now (reliable ones include recovering).",
            labels=["hub", "subprotocol"],
        )
        groups = GaugeMetricFamily(
            "webpubsub_groups", "Groups with members on this node.", labels=["hub"]
        )
        reliable = GaugeMetricFamily(
            "webpubsub_reliable_connections",
            "Reliable connections, attached to a socket or recovering (spec 4.7).",
            labels=["state"],
        )
        buffered_messages = GaugeMetricFamily(
            "webpubsub_reliable_buffer_messages",
            "Unacknowledged messages held in reliable connections' resend buffers.",
        )
        buffered_bytes = GaugeMetricFamily(
            "webpubsub_reliable_buffer_bytes",
            "Bytes held in reliable connections' resend buffers.",
        )
        largest = GaugeMetricFamily(
            "webpubsub_reliable_buffer_max_bytes",
            "Bytes in the largest single resend buffer.",
        )
        attached = recovering = messages = size = biggest = 0
        for key, hub in node.hubs.items():
            by_subprotocol: dict[str, int] = {}
            for conn in hub.connections.values():
                name = conn.codec.subprotocol or "none"
                by_subprotocol[name] = by_subprotocol.get(name, 0) + 1
                recovery = conn.recovery
                if recovery is None:
                    continue
                if recovery.attached:
                    attached += 1
                else:
                    recovering += 1
                buffer = recovery.buffer
                messages += len(buffer)
                size += buffer.size
                biggest = max(biggest, buffer.size)
            for name, count in by_subprotocol.items():
                connections.add_metric([key, name], count)
            groups.add_metric([key], len(hub.groups))
        reliable.add_metric(["attached"], attached)
        reliable.add_metric(["recovering"], recovering)
        buffered_messages.add_metric([], messages)
        buffered_bytes.add_metric([], size)
        largest.add_metric([], biggest)
        info = GaugeMetricFamily(
            "webpubsub_info", "The running webpubsub version.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield from (connections, groups, reliable, buffered_messages, buffered_bytes, largest)
        yield info
        if self._extra is not None:
            yield from self._extra()
