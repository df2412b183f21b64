"""Live trace records without sockets: a real Node, recording transports, a fixed clock.

Covers the record shapes of spec 7 (ConnectivityLogs, MessagingLogs, HttpRequestLogs, plus
EventHandlerLogs), viewer filters, bounded queues and observing only while watched.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.core.helpers import make_connection
from webpubsub.core import commands as c
from webpubsub.core.message import DataType, Message
from webpubsub.core.node import Node
from webpubsub.protocols import RAW
from webpubsub.server.ops import Category, LiveTrace, TraceFilter, Viewer
from webpubsub.server.ops._trace import PREVIEW_BYTES

NOW = 1_800_000_000.25


@pytest.fixture
def node() -> Node:
    return Node()


@pytest.fixture
def trace(node: Node) -> LiveTrace:
    return LiveTrace(node.observer, clock=lambda: NOW)


def watch(trace: LiveTrace, **kwargs: Any) -> Viewer:
    return trace.subscribe(Viewer(**kwargs))


class TestObservingOnlyWhileWatched:
    """No viewer, no observer: the node's fan-out never calls the trace."""

    def test_the_first_viewer_registers_and_the_last_unregisters(
        self, node: Node, trace: LiveTrace
    ) -> None:
        assert not node.observer
        first, second = watch(trace), watch(trace)
        assert node.observer and trace.observing
        trace.unsubscribe(first)
        assert node.observer
        trace.unsubscribe(second)
        assert not node.observer and not trace.observing

    def test_nothing_is_recorded_before_anyone_watches(self, node: Node, trace: LiveTrace) -> None:
        conn, _ = make_connection()
        node.connect(conn)
        viewer = watch(trace)
        assert viewer.take() == []


class TestConnectivityRecords:
    def test_open_and_close(self, node: Node, trace: LiveTrace) -> None:
        viewer = watch(trace)
        conn, _ = make_connection("chat", user_id="alice")
        conn.transport.peer = "10.0.0.7:5123"  # type: ignore[attr-defined]
        node.connect(conn, ["room"])
        node.disconnect(conn, "bye")
        started, ended = viewer.take()
        assert started["category"] == Category.CONNECTIVITY
        assert started["operationName"] == "ConnectionStarted"
        assert started["hub"] == "chat"
        assert started["connectionId"] == conn.connection_id
        assert started["userId"] == "alice"
        assert started["subprotocol"] == "json.webpubsub.azure.v1"
        assert started["ip"] == "10.0.0.7:5123"
        assert started["groups"] == ["room"]
        assert started["time"] == "2027-01-15T08:00:00.250Z"
        assert ended["operationName"] == "ConnectionEnded"
        assert ended["reason"] == "bye"

    def test_slow_consumer_is_an_aborted_connection(self, node: Node, trace: LiveTrace) -> None:
        viewer = watch(trace)
        conn, _ = make_connection()
        node.observer.slow_consumer(conn, 123456)
        (record,) = viewer.take()
        assert record["operationName"] == "ConnectionAborted"
        assert record["level"] == "Warning"
        assert "123456" in record["reason"]


class TestMessagingRecords:
    def test_a_client_message_in(self, node: Node, trace: LiveTrace) -> None:
        conn, _ = make_connection("chat", user_id="bob", roles=("webpubsub.sendToGroup",))
        node.connect(conn)
        viewer = watch(trace)
        frame = b'{"type":"sendToGroup","group":"room","dataType":"text","data":"hi"}'
        node.receive(conn, frame, True)
        received, sent = viewer.take()
        assert received["operationName"] == "MessageReceived"
        assert received["kind"] == "sendToGroup"
        assert received["target"] == "group:room"
        assert received["group"] == "room"
        assert received["size"] == len(frame)
        assert received["dataType"] == "text"
        assert received["userId"] == "bob"
        assert "preview" not in received
        assert sent["operationName"] == "MessageSent"
        assert sent["recipients"] == 0

    def test_a_send_out_counts_recipients(self, node: Node, trace: LiveTrace) -> None:
        for user in ("a", "b"):
            conn, _ = make_connection("chat", user_id=user)
            node.connect(conn)
        viewer = watch(trace)
        node.execute("chat", c.Send(c.ToAll(), Message(b'{"x":1}', DataType.JSON)))
        (record,) = viewer.take()
        assert record["target"] == "all"
        assert record["recipients"] == 2
        assert record["size"] == 7
        assert record["dataType"] == "json"

    @pytest.mark.parametrize(
        ("target", "field", "value"),
        [
            (c.ToGroup("g1"), "group", "g1"),
            (c.ToUser("u1"), "userId", "u1"),
            (c.ToConnection("c1"), "connectionId", "c1"),
        ],
    )
    def test_targets_fill_the_field_filters_look_at(
        self, node: Node, trace: LiveTrace, target: c.Target, field: str, value: str
    ) -> None:
        conn, _ = make_connection("chat")
        node.connect(conn)
        viewer = watch(trace)
        node.execute("chat", c.Send(target, Message(b"x", DataType.TEXT)))
        (record,) = viewer.take()
        assert record[field] == value

    def test_other_commands_are_named(self, node: Node, trace: LiveTrace) -> None:
        conn, _ = make_connection("chat", user_id="u")
        node.connect(conn)
        viewer = watch(trace)
        node.execute("chat", c.AddToGroup(c.ToUser("u"), "g"))
        (record,) = viewer.take()
        assert record["operationName"] == "AddToGroup"
        assert record["group"] == "g"
        assert record["recipients"] == 1

    def test_previews_only_for_viewers_that_ask(self, node: Node, trace: LiveTrace) -> None:
        conn, _ = make_connection("chat")
        node.connect(conn)
        plain, curious = watch(trace), watch(trace, preview=True)
        node.execute("chat", c.Send(c.ToAll(), Message(b"hello", DataType.TEXT)))
        node.execute("chat", c.Send(c.ToAll(), Message(b"\x00\xff" * 100, DataType.BINARY)))
        assert all("preview" not in record for record in plain.take())
        text, binary = curious.take()
        assert text["preview"] == "hello"
        assert binary["preview"].startswith("00 ff 00 ff")
        assert binary["preview"].endswith("…")
        assert binary["preview"].count(" ") == PREVIEW_BYTES - 1

    def test_simple_clients_frames_are_events(self, node: Node, trace: LiveTrace) -> None:
        conn, _ = make_connection("chat", codec=RAW)
        node.connect(conn)
        node.on_user_event = lambda conn, request: None
        viewer = watch(trace)
        node.receive(conn, b"raw text", True)
        (record,) = viewer.take()
        assert record["kind"] == "event"
        assert record["target"] == "event:message"


class TestHttpAndEventHandlerRecords:
    def test_rest_calls(self, trace: LiveTrace) -> None:
        viewer = watch(trace)
        trace.rest_call("POST", "/api/hubs/chat/:send", "WebPubSub_SendToAll", 202, 0.0015)
        trace.rest_call("GET", "/api/hubs/chat/groups/g/connections", "X", 404, 0.001)
        trace.rest_call("GET", "/livetrace/stream", "-", 200, 0.001)  # the viewer's own
        ok, missing = viewer.take()
        assert ok["category"] == Category.HTTP
        assert ok["hub"] == "chat"
        assert ok["operation"] == "WebPubSub_SendToAll"
        assert ok["status"] == 202
        assert ok["duration"] == 1.5
        assert ok["level"] == "Informational"
        assert missing["level"] == "Warning"

    def test_event_handler_calls(self, trace: LiveTrace) -> None:
        viewer = watch(trace)
        trace.upstream_call("chat", "connect", "http://app/connect", 200, 0.02, None)
        trace.upstream_call("chat", "message", "http://app/m", None, 30.0, "timeout")
        ok, failed = viewer.take()
        assert ok["category"] == Category.EVENT_HANDLER
        assert ok["event"] == "connect"
        assert ok["status"] == 200
        assert failed["error"] == "timeout"
        assert "status" not in failed
        assert failed["level"] == "Warning"


class TestViewers:
    def test_filters(self, node: Node, trace: LiveTrace) -> None:
        alice, _ = make_connection("chat", user_id="alice")
        bob, _ = make_connection("Other", user_id="bob")
        by_user = watch(trace, trace_filter=TraceFilter(user="alice"))
        by_hub = watch(trace, trace_filter=TraceFilter(hub="other"))
        by_category = watch(trace, trace_filter=TraceFilter(categories=frozenset([Category.HTTP])))
        by_connection = watch(trace, trace_filter=TraceFilter(connection=bob.connection_id))
        by_group = watch(trace, trace_filter=TraceFilter(group="g"))
        node.connect(alice)
        node.connect(bob, ["g"])
        node.execute("chat", c.Send(c.ToGroup("g"), Message(b"x", DataType.TEXT)))
        trace.rest_call("GET", "/api/health", "HealthApi_GetServiceStatus", 200, 0.0)
        assert [r["userId"] for r in by_user.take()] == ["alice"]
        assert [r["userId"] for r in by_hub.take()] == ["bob"]
        assert [r["url"] for r in by_category.take()] == ["/api/health"]
        assert [r["connectionId"] for r in by_connection.take()] == [bob.connection_id]
        assert [r["operationName"] for r in by_group.take()] == ["MessageSent"]

    def test_filter_from_query(self) -> None:
        query = {"hub": ["chat"], "category": ["messaging,HttpRequestLogs", "bogus"], "user": [""]}
        parsed = TraceFilter.from_query(query)
        assert parsed == TraceFilter(
            hub="chat", categories=frozenset([Category.MESSAGING, Category.HTTP])
        )

    def test_the_queue_is_bounded_and_drops_the_oldest(self, trace: LiveTrace) -> None:
        viewer = watch(trace, limit=3)
        for status in range(200, 205):
            trace.rest_call("GET", "/x", "-", status, 0.0)
        assert [r["status"] for r in viewer.take()] == [202, 203, 204]
        assert viewer.dropped == 2
        assert trace.dropped == 2

    def test_wake_is_called_once_until_the_queue_is_taken(self, trace: LiveTrace) -> None:
        calls: list[None] = []
        viewer = watch(trace, wake=lambda: calls.append(None))
        trace.rest_call("GET", "/x", "-", 200, 0.0)
        trace.rest_call("GET", "/x", "-", 200, 0.0)
        assert len(calls) == 1
        viewer.take()
        trace.rest_call("GET", "/x", "-", 200, 0.0)
        assert len(calls) == 2


def test_group_streams_and_invocations_are_traced(node: Node, trace: LiveTrace) -> None:
    conn, _ = make_connection("chat", user_id="alice", roles=("webpubsub.sendToGroup",))
    node.connect(conn)
    viewer = watch(trace)
    node.receive(conn, b'{"type":"sendToGroup","group":"g","stream":{"streamId":"s"}}', True)
    node.receive(conn, b'{"type":"streamEnd","streamId":"s","error":{"message":"x"}}', True)
    node.observer.invocation_done(conn, "ask", "Timeout", 2.0)
    records = [r for r in viewer.take() if r["category"] == Category.MESSAGING]
    by_name = {r["operationName"]: r for r in records}
    opened, ended = by_name["GroupStreamOpened"], by_name["GroupStreamEnded"]
    assert (opened["group"], opened["streamId"]) == ("g", "s")
    assert ended["error"] == "UserError"
    invocation = by_name["Invocation"]
    assert (invocation["event"], invocation["outcome"], invocation["duration"]) == (
        "ask",
        "Timeout",
        2000.0,
    )
    assert invocation["level"] == "Warning"
