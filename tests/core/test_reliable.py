"""Reliable connections: sequence ids, the resend buffer and recovery (spec 4.7)."""

from __future__ import annotations

import json

import pytest

from webpubsub.core import commands as c
from webpubsub.core.message import DataType, Message
from webpubsub.core.node import Node, RecoveryRefused
from webpubsub.core.reliable import ResendBuffer
from webpubsub.protocols import RELIABLE_JSON

from .helpers import RecordingTransport, make_connection


def messages_of(transport: RecordingTransport) -> list[dict[str, object]]:
    # Reliable frames arrive as pieces: join them back into frames first.
    joined = RecordingTransport()
    joined.frames = [b"".join(transport.frames)] if transport.frames else []
    out: list[dict[str, object]] = []
    data = joined.frames[0] if joined.frames else b""
    while data:
        length = data[1] & 0x7F
        offset = 2
        if length == 126:
            length, offset = int.from_bytes(data[2:4], "big"), 4
        out.append(json.loads(data[offset : offset + length]))
        data = data[offset + length :]
    return out


def send_all(node: Node, text: str) -> None:
    node.execute("chat", c.Send(c.ToAll(), Message(text.encode(), DataType.TEXT)))


class TestResendBuffer:
    def test_ack_is_cumulative(self) -> None:
        buffer = ResendBuffer()
        for _ in range(5):
            sequence_id = buffer.take_id()
            assert buffer.push(sequence_id, (b"abc",))
        buffer.ack(3)
        assert len(buffer) == 2 and buffer.size == 6
        buffer.ack(100)
        assert len(buffer) == 0 and buffer.size == 0

    def test_bounds(self) -> None:
        by_count = ResendBuffer(max_messages=2)
        assert by_count.push(1, (b"a",)) and by_count.push(2, (b"b",))
        assert not by_count.push(3, (b"c",))
        by_size = ResendBuffer(max_bytes=4)
        assert not by_size.push(1, (b"abcde",))


class TestRecovery:
    def setup_method(self) -> None:
        self.node = Node(recovery_window=30)
        self.conn, self.transport = make_connection(codec=RELIABLE_JSON, user_id="u")
        self.node.connect(self.conn, ["g"])
        assert self.conn.recovery is not None
        self.token = self.conn.recovery.token

    def test_sequence_ids_and_replay_of_unacked(self) -> None:
        send_all(self.node, "one")
        send_all(self.node, "two")
        received = messages_of(self.transport)
        assert received[0]["reconnectionToken"] == self.token
        assert [m["sequenceId"] for m in received[1:]] == [1, 2]
        self.node.receive(self.conn, b'{"type":"sequenceAck","sequenceId":1}', True)

        self.node.connection_lost(self.conn, self.transport, now=0)
        assert self.node.connection_exists("chat", self.conn.connection_id)
        assert self.node.group_exists("chat", "g")
        send_all(self.node, "three")  # buffered while detached

        fresh = RecordingTransport()
        resumed = self.node.resume("chat", self.conn.connection_id, self.token, fresh, now=1)
        assert resumed is self.conn
        replay = messages_of(fresh)
        assert replay[0]["event"] == "connected"
        assert [(m["sequenceId"], m["data"]) for m in replay[1:]] == [(2, "two"), (3, "three")]

    def test_bad_token_and_expiry_are_refused(self) -> None:
        self.node.connection_lost(self.conn, self.transport, now=0)
        with pytest.raises(RecoveryRefused):
            self.node.resume("chat", self.conn.connection_id, "wrong", RecordingTransport(), 1)
        closed: list[str] = []
        self.node.on_disconnected.append(lambda conn, reason: closed.append(reason))
        self.node.expire(now=29)
        assert closed == []
        self.node.expire(now=31)
        assert len(closed) == 1
        assert not self.node.connection_exists("chat", self.conn.connection_id)

    def test_overflow_closes_unrecoverably(self) -> None:
        assert self.conn.recovery is not None
        self.conn.recovery.buffer.max_messages = 3
        for i in range(4):
            send_all(self.node, str(i))
        assert self.transport.closed is not None and self.transport.closed[0] == 1008
        assert not self.node.connection_exists("chat", self.conn.connection_id)

    def test_clean_close_by_rest_prevents_recovery(self) -> None:
        self.node.execute("chat", c.CloseConnections(c.ToAll(), "bye"))
        assert self.transport.closed == (1008, "bye")
        with pytest.raises(RecoveryRefused):
            self.node.resume("chat", self.conn.connection_id, self.token, RecordingTransport(), 1)
