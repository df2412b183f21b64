"""Health checks: ``/healthz`` (the process answers) and ``/readyz`` (it can serve traffic).

Readiness is :meth:`Service.ready <webpubsub.server.app.Service.ready>`: listening, and in a
cluster, the Redis engine healthy. The cluster part also feeds ``/metrics``
(:class:`ClusterState`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric

from ..http import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from ..app import Service


class ClusterState:
    """What this node knows of its cluster, read from the service's engine at scrape time."""

    def __init__(self, service: Service) -> None:
        self._service = service

    def metrics(self) -> Iterable[Metric]:
        engine = self._service.engine
        enabled = GaugeMetricFamily(
            "webpubsub_cluster_enabled", "1 when this node is part of a cluster (Redis engine)."
        )
        enabled.add_metric([], 0 if engine is None else 1)
        yield enabled
        if engine is None:
            return
        up = GaugeMetricFamily(
            "webpubsub_cluster_redis_up",
            "1 while the cluster's Redis answers this node, 0 while it does not.",
        )
        up.add_metric([], 1 if engine.healthy else 0)
        yield up
        info = GaugeMetricFamily(
            "webpubsub_cluster_node_info", "This node's id in the cluster.", labels=["node_id"]
        )
        info.add_metric([engine.node_id], 1)
        yield info


def serving(service: Service) -> bool:
    """Whether the service's listening socket accepts connections (False once stopping)."""
    # Service keeps its asyncio.Server private; it is None before start and after stop.
    server: Any = getattr(service, "_server", None)
    return server is not None and bool(server.is_serving())


class Health:
    """The ``/healthz`` and ``/readyz`` pages of one service."""

    def __init__(self, service: Service) -> None:
        self._service = service

    async def healthz(self, request: HttpRequest) -> HttpResponse:
        """Liveness: answering at all means the event loop runs."""
        if request.method not in ("GET", "HEAD"):
            return method_not_allowed("GET, HEAD")
        return _no_store(HttpResponse.json(200, {"status": "ok"}))

    async def readyz(self, request: HttpRequest) -> HttpResponse:
        """Readiness: 200 when listening and (in a cluster) Redis reachable, else 503."""
        if request.method not in ("GET", "HEAD"):
            return method_not_allowed("GET, HEAD")
        ready, reason = self._service.ready()
        engine = self._service.engine
        cluster = "disabled" if engine is None else "ok" if engine.healthy else "unreachable"
        body = {"status": "ready" if ready else "unready", "reason": reason, "cluster": cluster}
        return _no_store(HttpResponse.json(200 if ready else 503, body))


def _no_store(response: HttpResponse) -> HttpResponse:
    response.headers.append(("Cache-Control", "no-store"))
    return response


def method_not_allowed(allow: str) -> HttpResponse:
    """405 with the spec's error body and an ``Allow`` header."""
    response = HttpResponse.json(
        405, {"code": "Error.MethodNotAllowed", "message": f"Use {allow}."}
    )
    response.headers.append(("Allow", allow))
    return response
