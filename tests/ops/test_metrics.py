"""Prometheus metrics: counters from the observer hooks, gauges from the node at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

import webpubsub
from tests.core.helpers import make_connection
from tests.ops.helpers import Scrape, scrape, wait_for_metric
from tests.server.helpers import connect_json
from tests.upstream_app import UpstreamApp
from webpubsub.core import commands as c
from webpubsub.core.events import EventHandlerSettings, HubSettings
from webpubsub.core.message import DataType, Message
from webpubsub.core.node import Node
from webpubsub.protocols import RELIABLE_JSON
from webpubsub.server.ops import Metrics
from webpubsub.server.ops._metrics import OTHER, LabelCap
from webpubsub.testing import ClientFactory, ServiceThread


def local_scrape(metrics: Metrics) -> Scrape:
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    return Scrape(body.decode())


class TestObserverCounters:
    """The hooks, driven by a real Node without sockets."""

    def test_connections_messages_and_commands(self) -> None:
        node = Node()
        metrics = Metrics(node, process=False)
        node.observer.add(metrics)
        alice, _ = make_connection("chat", user_id="alice", roles=("webpubsub.sendToGroup",))
        bob, _ = make_connection("chat", user_id="bob", codec=RELIABLE_JSON)
        node.connect(alice, ["room"])
        node.connect(bob, ["room"])
        frame = b'{"type":"sendToGroup","group":"room","dataType":"text","data":"hello"}'
        node.receive(alice, frame, True)
        node.execute("chat", c.Send(c.ToUser("bob"), Message(b"12345", DataType.TEXT)))
        node.execute("chat", c.AddToGroup(c.ToUser("bob"), "other"))
        node.disconnect(alice, "bye")

        m = local_scrape(metrics)
        json_protocol = "json.webpubsub.azure.v1"
        assert m.value("webpubsub_connections_opened_total", hub="chat", subprotocol=json_protocol)
        assert m.total("webpubsub_connections_opened_total", hub="chat") == 2
        assert m.total("webpubsub_connections_closed_total", hub="chat") == 1
        assert m.value("webpubsub_messages_received_total", hub="chat", kind="sendToGroup") == 1
        assert m.value("webpubsub_received_bytes_total", hub="chat", kind="sendToGroup") == len(
            frame
        )
        assert m.value("webpubsub_sends_total", hub="chat", kind="group") == 1
        assert m.value("webpubsub_messages_sent_total", hub="chat", kind="group") == 2
        assert m.value("webpubsub_sent_bytes_total", hub="chat", kind="group") == 10
        assert m.value("webpubsub_messages_sent_total", hub="chat", kind="user") == 1
        assert m.value("webpubsub_commands_total", hub="chat", command="AddToGroup") == 1
        # State gauges come from the node as it is now.
        assert m.value("webpubsub_connections", hub="chat", subprotocol=RELIABLE_JSON.subprotocol)
        assert m.total("webpubsub_connections") == 1
        assert m.value("webpubsub_groups", hub="chat") == 2
        assert m.value("webpubsub_reliable_connections", state="attached") == 1
        assert m.value("webpubsub_reliable_buffer_messages") == 2  # nothing acknowledged yet
        assert m.value("webpubsub_reliable_buffer_bytes") > 0

    def test_group_streams_and_invocations(self) -> None:
        node = Node()
        metrics = Metrics(node, process=False)
        node.observer.add(metrics)
        alice, _ = make_connection("chat", user_id="alice", roles=("webpubsub.sendToGroup",))
        node.connect(alice)
        for frame in (
            b'{"type":"sendToGroup","group":"g","stream":{"streamId":"s1"}}',
            b'{"type":"streamEnd","streamId":"s1"}',
            b'{"type":"sendToGroup","group":"g","stream":{"streamId":"s2"}}',
            b'{"type":"streamEnd","streamId":"s2","error":{"message":"no"}}',
            b'{"type":"sendToGroup","group":"g","stream":{"streamId":"s3"}}',
        ):
            node.receive(alice, frame, True)
        node.disconnect(alice, "bye")  # s3 ends Cancelled
        metrics.invocation_done(alice, "e", "success", 0.2)
        metrics.invocation_done(alice, "e", "Timeout", 1.0)
        m = local_scrape(metrics)
        streams = "webpubsub_group_streams_total"
        assert m.value(streams, hub="chat", event="opened", result="") == 3
        assert m.value(streams, hub="chat", event="ended", result="ok") == 1
        assert m.value(streams, hub="chat", event="ended", result="UserError") == 1
        assert m.value(streams, hub="chat", event="ended", result="Cancelled") == 1
        assert m.value("webpubsub_invocations_total", hub="chat", outcome="success") == 1
        assert m.value("webpubsub_invocations_total", hub="chat", outcome="Timeout") == 1
        assert m.value("webpubsub_invocation_duration_seconds_count", hub="chat") == 2

    def test_rest_upstream_and_slow_consumers(self) -> None:
        node = Node()
        metrics = Metrics(node, process=False)
        metrics.rest_call("POST", "/api/hubs/h/:send", "WebPubSub_SendToAll", 202, 0.003)
        metrics.rest_call("GET", "/metrics", "-", 200, 0.001)
        metrics.upstream_call("h", "connect", "http://app", 200, 0.02, None)
        metrics.upstream_call("h", "my-own-event", "http://app", None, 1.5, "timeout")
        conn, _ = make_connection("h")
        metrics.slow_consumer(conn, 10_000_000)
        m = local_scrape(metrics)
        assert m.value(
            "webpubsub_rest_requests_total", operation="WebPubSub_SendToAll", status="202"
        )
        assert m.value("webpubsub_rest_requests_total", operation=OTHER, status="200") == 1
        count = "webpubsub_rest_request_duration_seconds_count"
        assert m.value(count, operation="WebPubSub_SendToAll") == 1
        assert m.value(
            "webpubsub_rest_request_duration_seconds_bucket",
            operation="WebPubSub_SendToAll",
            le="0.005",
        )
        assert m.value("webpubsub_upstream_calls_total", event="connect", status="200") == 1
        assert m.value("webpubsub_upstream_calls_total", event="user", status="error") == 1
        assert m.value("webpubsub_upstream_call_duration_seconds_count", event="user") == 1
        assert m.value("webpubsub_slow_consumer_closes_total", hub="h") == 1

    def test_hub_labels_are_capped(self) -> None:
        cap = LabelCap(2)
        assert [cap(v) for v in ("a", "b", "c", "a")] == ["a", "b", OTHER, "a"]

    def test_two_services_keep_separate_registries(self) -> None:
        first, second = Metrics(Node(), process=False), Metrics(Node(), process=False)
        first.rest_call("GET", "/x", "-", 200, 0.0)
        assert local_scrape(first).total("webpubsub_rest_requests_total") == 1
        assert local_scrape(second).total("webpubsub_rest_requests_total") == 0


class TestMetricsEndpoint:
    """``curl /metrics`` after a small run shows non-zero counters."""

    async def test_a_small_run(self, service: ServiceThread, hub: str) -> None:
        async with ClientFactory(service.connection_string, hub) as clients:
            alice = await clients.connect(
                user_id="alice", roles=["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
            )
            bob = await clients.connect(user_id="bob", groups=["room"])
            await alice.join_group("room")
            await alice.send_to_group("room", "hello")
            await bob.receive()
            with webpubsub.WebPubSubServiceClient.from_connection_string(
                service.connection_string, hub=hub
            ) as rest:
                rest.send_to_all({"n": 1})
            await alice.receive()
            await alice.close()

        m = wait_for_metric(
            service, lambda m: m.total("webpubsub_connections_closed_total", hub=hub) == 2
        )
        assert m.total("webpubsub_connections_opened_total", hub=hub) == 2
        assert m.value("webpubsub_messages_received_total", hub=hub, kind="joinGroup") == 1
        assert m.value("webpubsub_messages_received_total", hub=hub, kind="sendToGroup") == 1
        assert m.value("webpubsub_received_bytes_total", hub=hub, kind="sendToGroup") > 0
        assert m.value("webpubsub_messages_sent_total", hub=hub, kind="group") == 2
        assert m.value("webpubsub_messages_sent_total", hub=hub, kind="all") == 2
        assert m.value("webpubsub_sent_bytes_total", hub=hub, kind="all") == 2 * len('{"n":1}')
        assert m.value(
            "webpubsub_rest_requests_total", operation="WebPubSub_SendToAll", status="202"
        )
        assert m.total("webpubsub_rest_request_duration_seconds_count") > 0
        assert m.value("webpubsub_info", version=webpubsub.__version__) == 1
        assert m.value("webpubsub_cluster_enabled") == 0
        assert m.total("process_resident_memory_bytes") > 0

    def test_head_and_wrong_method(self, service: ServiceThread) -> None:
        assert httpx.head(f"{service.endpoint}/metrics").status_code == 200
        assert httpx.post(f"{service.endpoint}/metrics").status_code == 405


@pytest.fixture
def app() -> Iterator[UpstreamApp]:
    with UpstreamApp() as running:
        yield running


class TestUpstreamMetrics:
    async def test_event_handler_calls_are_counted(
        self, service: ServiceThread, hub: str, app: UpstreamApp
    ) -> None:
        settings = HubSettings((EventHandlerSettings(app.url_template),))
        service.call(lambda: service.settings.hubs.__setitem__(hub.lower(), settings))
        before = scrape(service).value(
            "webpubsub_upstream_call_duration_seconds_count", event="connected"
        )
        async with ClientFactory(service.connection_string, hub) as clients:
            await clients.connect(user_id="u")
            wait_for_metric(
                service,
                lambda m: (
                    m.value("webpubsub_upstream_calls_total", event="connected", status="204") > 0
                    and m.value("webpubsub_upstream_call_duration_seconds_count", event="connected")
                    > before
                ),
            )


async def test_an_invocation_without_handler_is_counted(service: ServiceThread, hub: str) -> None:
    async with await connect_json(service, hub) as client:
        await client.send({"type": "invoke", "invocationId": "i1", "event": "nobody"})
        answer = await client.receive()
        assert answer["type"] == "invokeResponse" and answer["error"]["name"] == "NotFound"
    wait_for_metric(
        service,
        lambda m: m.value("webpubsub_invocations_total", hub=hub, outcome="NotFound") == 1,
    )
