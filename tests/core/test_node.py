"""Client requests handled by the node: acks, permissions, duplicates (spec 4.3-4.6)."""

from __future__ import annotations

import json
import os
import re

import pytest

from webpubsub.core.connection import Connection, new_connection_id
from webpubsub.core.node import Node
from webpubsub.protocols import RAW

from .helpers import RecordingTransport, make_connection

ALL_ROLES = ("webpubsub.joinLeaveGroup", "webpubsub.sendToGroup")


@pytest.fixture
def node() -> Node:
    return Node()


def connect(
    node: Node, roles: tuple[str, ...] = ALL_ROLES, user_id: str | None = "u1", **kw: object
) -> tuple[Connection, RecordingTransport]:
    conn, transport = make_connection(user_id=user_id, roles=roles, **kw)  # type: ignore[arg-type]
    node.connect(conn)
    transport.take()  # the connected message
    return conn, transport


def send(node: Node, conn: Connection, envelope: dict[str, object]) -> None:
    node.receive(conn, json.dumps(envelope).encode(), True)


class TestConnect:
    def test_connected_message(self, node: Node) -> None:
        conn, transport = make_connection(user_id="u1")
        node.connect(conn, ["g1"])
        assert transport.messages() == [
            {
                "type": "system",
                "event": "connected",
                "userId": "u1",
                "connectionId": conn.connection_id,
            }
        ]
        assert node.group_exists("chat", "g1")

    def test_disconnect_forgets_everything_and_runs_hooks(self, node: Node) -> None:
        seen: list[tuple[str, str]] = []
        node.on_disconnected.append(lambda conn, reason: seen.append((conn.connection_id, reason)))
        conn, _ = connect(node)
        node.disconnect(conn, "gone")
        node.disconnect(conn, "twice")
        assert seen == [(conn.connection_id, "gone")]
        assert node.hubs == {}


class TestRequests:
    def test_join_ack_and_duplicate(self, node: Node) -> None:
        conn, transport = connect(node)
        send(node, conn, {"type": "joinGroup", "group": "g", "ackId": 1})
        send(node, conn, {"type": "joinGroup", "group": "g", "ackId": 1})
        first, second = transport.take()
        assert first == {"type": "ack", "ackId": 1, "success": True}
        assert second["success"] is False
        assert second["error"]["name"] == "Duplicate"

    def test_join_without_role_is_forbidden(self, node: Node) -> None:
        conn, transport = connect(node, roles=())
        send(node, conn, {"type": "joinGroup", "group": "g", "ackId": 7})
        [ack] = transport.take()
        assert ack["error"]["name"] == "Forbidden"
        assert not node.group_exists("chat", "g")

    def test_denied_request_without_ack_is_silent(self, node: Node) -> None:
        conn, transport = connect(node, roles=())
        send(node, conn, {"type": "sendToGroup", "group": "g", "data": "x", "dataType": "text"})
        assert transport.take() == []

    def test_send_to_group_with_no_echo(self, node: Node) -> None:
        a, ta = connect(node)
        b, tb = connect(node, user_id="u2")
        for conn in (a, b):
            send(node, conn, {"type": "joinGroup", "group": "g"})
        send(
            node,
            a,
            {
                "type": "sendToGroup",
                "group": "g",
                "dataType": "json",
                "data": {"x": 1},
                "noEcho": True,
                "ackId": 2,
            },
        )
        assert ta.take() == [{"type": "ack", "ackId": 2, "success": True}]
        assert tb.take() == [
            {
                "type": "message",
                "from": "group",
                "group": "g",
                "fromUserId": "u1",
                "dataType": "json",
                "data": {"x": 1},
            }
        ]

    def test_publisher_need_not_be_a_member(self, node: Node) -> None:
        a, _ = connect(node)
        b, tb = connect(node)
        send(node, b, {"type": "joinGroup", "group": "g"})
        send(node, a, {"type": "sendToGroup", "group": "g", "dataType": "binary", "data": "AQID"})
        assert tb.take()[0]["data"] == "AQID"

    def test_bad_argument_with_ack_gets_bad_request(self, node: Node) -> None:
        conn, transport = connect(node)
        send(node, conn, {"type": "joinGroup", "group": "   ", "ackId": 3})
        send(
            node,
            conn,
            {
                "type": "sendToGroup",
                "group": "g",
                "dataType": "binary",
                "data": "not base64!",
                "ackId": 4,
            },
        )
        acks = transport.take()
        assert [a["error"]["name"] for a in acks] == ["BadRequest", "BadRequest"]

    def test_unknown_type_with_ack_is_refused_without_ack_ignored(self, node: Node) -> None:
        conn, transport = connect(node)
        send(node, conn, {"type": "somethingNew", "ackId": 5})
        send(node, conn, {"type": "somethingNew"})
        [ack] = transport.take()
        assert ack["ackId"] == 5 and ack["success"] is False
        assert transport.closed is None

    def test_invalid_json_closes_with_1008(self, node: Node) -> None:
        conn, transport = connect(node)
        node.receive(conn, b"{not json", True)
        assert transport.closed is not None and transport.closed[0] == 1008
        assert node.hubs == {}

    def test_event_without_upstream_acks_an_error(self, node: Node) -> None:
        conn, transport = connect(node)
        send(
            node, conn, {"type": "event", "event": "e", "dataType": "text", "data": "x", "ackId": 9}
        )
        [ack] = transport.take()
        assert ack["error"]["name"] == "InternalServerError"

    def test_ping_pong(self, node: Node) -> None:
        conn, transport = connect(node)
        send(node, conn, {"type": "ping"})
        assert transport.take() == [{"type": "pong"}]

    def test_simple_client_without_handler_is_closed_1011(self, node: Node) -> None:
        conn, transport = connect(node, codec=RAW)
        node.receive(conn, b"hello", True)
        assert transport.closed is not None and transport.closed[0] == 1011

    def test_simple_client_send_to_group_mode(self, node: Node) -> None:
        raw, _ = connect(node, codec=RAW)
        raw.raw_group = "g"
        listener, tl = connect(node)
        send(node, listener, {"type": "joinGroup", "group": "g"})
        node.receive(raw, b"\x01\x02", False)
        assert tl.take()[0] == {
            "type": "message",
            "from": "group",
            "group": "g",
            "fromUserId": "u1",
            "dataType": "binary",
            "data": "AQI=",
        }


def test_connection_ids_are_unique_and_url_safe_even_across_a_fork() -> None:
    ids = [new_connection_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{32}", i) for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id must not be the parent's next one
        os.write(write, new_connection_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    assert child != new_connection_id()
