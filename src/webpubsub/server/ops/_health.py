"""Health checks: ``/healthz`` (the process answers) and ``/readyz`` (it can serve traffic).

Readiness asks the cluster engine, when there is one, whether its shared state (Redis) is
reachable. The engine opts in by giving its broker a ``ping()`` coroutine that raises when the
shared state cannot be reached (see :class:`SupportsPing`); a broker may also expose
``nodes`` (how many nodes it currently sees), which ``/metrics`` then reports.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from prometheus_client.core import GaugeMetricFamily, Metric

from ..http import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from ...core.node import Node
    from ..app import Service

log = logging.getLogger("webpubsub.health")

PING_TIMEOUT = 2.0
"""Seconds a readiness probe waits for the cluster engine before calling it unreachable."""


@runtime_checkable
class SupportsPing(Protocol):
    """A broker that can tell whether the cluster's shared state is reachable."""

    async def ping(self) -> None:
        """Return when the shared state answered; raise when it did not."""


class ClusterState:
    """What this node knows of its cluster: whether it is in one, and whether it is healthy.

    ``up`` is the outcome of the last check (None before the first one); checks run on
    every ``/readyz`` and every ``/metrics`` scrape, so the gauge stays fresh.
    """

    def __init__(self, node: Node) -> None:
        self._node = node
        self.up: bool | None = None
        self.problem = ""

    @property
    def enabled(self) -> bool:
        return self._node.broker is not None

    async def check(self) -> bool:
        """Ping the engine (bounded by :data:`PING_TIMEOUT`); True when healthy or alone."""
        broker = self._node.broker
        if not isinstance(broker, SupportsPing):
            self.up = True if broker is None else None
            self.problem = ""
            return True
        try:
            await asyncio.wait_for(broker.ping(), PING_TIMEOUT)
        except TimeoutError:
            self._failed(f"no answer within {PING_TIMEOUT:g} s")
        except Exception as exc:  # any engine failure means "not ready"; say which
            self._failed(type(exc).__name__)
        else:
            if self.up is False:
                log.info("cluster engine reachable again")
            self.up, self.problem = True, ""
        return bool(self.up)

    def _failed(self, problem: str) -> None:
        if self.up is not False:
            log.warning("cluster engine unreachable: %s", problem)
        self.up, self.problem = False, problem

    def describe(self) -> str:
        if not self.enabled:
            return "disabled"
        if self.up is None:
            return "unknown"
        return "ok" if self.up else f"unreachable: {self.problem}"

    def metrics(self) -> Iterable[Metric]:
        enabled = GaugeMetricFamily(
            "webpubsub_cluster_enabled", "1 when this node is part of a cluster (has a broker)."
        )
        enabled.add_metric([], 1 if self.enabled else 0)
        yield enabled
        if not self.enabled:
            return
        up = GaugeMetricFamily(
            "webpubsub_cluster_up",
            "1 when the cluster's shared state answered the last check, 0 when it did not.",
        )
        if self.up is not None:
            up.add_metric([], 1 if self.up else 0)
        yield up
        nodes = getattr(self._node.broker, "nodes", None)
        if isinstance(nodes, int) and not isinstance(nodes, bool):
            gauge = GaugeMetricFamily("webpubsub_cluster_nodes", "Nodes this node sees.")
            gauge.add_metric([], nodes)
            yield gauge


def serving(service: Service) -> bool:
    """Whether the service's listening socket accepts connections (False once stopping)."""
    # Service keeps its asyncio.Server private; it is None before start and after stop.
    server: Any = getattr(service, "_server", None)
    return server is not None and bool(server.is_serving())


class Health:
    """The ``/healthz`` and ``/readyz`` pages of one service."""

    def __init__(self, service: Service, cluster: ClusterState) -> None:
        self._service = service
        self._cluster = cluster

    async def healthz(self, request: HttpRequest) -> HttpResponse:
        """Liveness: answering at all means the event loop runs."""
        if request.method not in ("GET", "HEAD"):
            return _method_not_allowed()
        return HttpResponse.json(200, {"status": "ok"})

    async def readyz(self, request: HttpRequest) -> HttpResponse:
        """Readiness: listening, not shutting down, and (in a cluster) Redis reachable."""
        if request.method not in ("GET", "HEAD"):
            return _method_not_allowed()
        listening = serving(self._service)
        cluster_ok = await self._cluster.check()
        ready = listening and cluster_ok
        body = {
            "status": "ready" if ready else "unready",
            "checks": {
                "listening": "ok" if listening else "stopping",
                "cluster": self._cluster.describe(),
            },
        }
        response = HttpResponse.json(200 if ready else 503, body)
        response.headers.append(("Cache-Control", "no-store"))
        return response


def _method_not_allowed() -> HttpResponse:
    response = HttpResponse.json(
        405, {"code": "Error.MethodNotAllowed", "message": "Use GET or HEAD."}
    )
    response.headers.append(("Allow", "GET, HEAD"))
    return response
