"""Group streams in the node (spec-next 2): the publisher's answers and what subscribers get,
with the ack rules of 2.5, idle timeouts and the recently-closed list. No sockets."""

from __future__ import annotations

import json
from typing import Any

from webpubsub.core.node import Node
from webpubsub.protocols import RAW, RELIABLE_JSON

from .helpers import RecordingTransport, make_connection
from .test_reliable import messages_of

SEND = ("webpubsub.sendToGroup",)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def frame(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


class TestStreams:
    def setup_method(self) -> None:
        self.clock = Clock()
        self.node = Node()
        self.node.clock = self.clock
        self.pub, self.pub_t = make_connection(user_id="alice", roles=SEND)
        self.sub, self.sub_t = make_connection(user_id="bob")
        self.raw, self.raw_t = make_connection(codec=RAW)
        self.node.connect(self.pub)
        self.node.connect(self.sub, ["g"])
        self.node.connect(self.raw, ["g"])
        for t in (self.pub_t, self.sub_t, self.raw_t):
            t.frames.clear()

    def send(self, **fields: Any) -> list[Any]:
        self.node.receive(self.pub, frame(**fields), True)
        return self.pub_t.take()

    def start(self, stream_id: str = "s1", **extra: Any) -> list[Any]:
        stream = {"streamId": stream_id, **extra}
        return self.send(type="sendToGroup", group="g", noEcho=False, stream=stream)

    def data(self, seq: int, text: str, stream_id: str = "s1") -> list[Any]:
        return self.send(
            type="streamData", streamId=stream_id, streamSequenceId=seq, dataType="text", data=text
        )

    def test_a_stream_from_start_to_end(self) -> None:
        assert self.start() == [{"type": "streamAck", "streamId": "s1", "expectedSequenceId": 1}]
        assert self.data(1, "hello ") == [
            {"type": "streamAck", "streamId": "s1", "expectedSequenceId": 2}
        ]
        self.data(2, "world")
        assert self.send(type="streamEnd", streamId="s1") == [
            {"type": "streamClosed", "streamId": "s1"}
        ]
        got = self.sub_t.take()
        assert got == [
            {
                "type": "message",
                "from": "group",
                "group": "g",
                "fromUserId": "alice",
                "dataType": "text",
                "data": "hello ",
                "stream": {"streamId": "s1", "streamSequenceId": 1},
            },
            {
                "type": "message",
                "from": "group",
                "group": "g",
                "fromUserId": "alice",
                "dataType": "text",
                "data": "world",
                "stream": {"streamId": "s1", "streamSequenceId": 2},
            },
            {
                "type": "message",
                "from": "group",
                "group": "g",
                "fromUserId": "alice",
                "dataType": "text",
                "data": "",
                "stream": {"streamId": "s1", "streamSequenceId": 3, "endOfStream": True},
            },
        ]
        # A simple client gets the payloads, not the terminal frame.
        assert [p for _, p in self.raw_t.payloads()] == [b"hello ", b"world"]

    def test_replays_gaps_and_unknown_streams(self) -> None:
        self.start()
        self.data(1, "a")
        assert self.data(1, "a") == [
            {"type": "streamAck", "streamId": "s1", "expectedSequenceId": 2}
        ]
        assert self.data(5, "e") == [
            {
                "type": "streamNack",
                "streamId": "s1",
                "expectedSequenceId": 2,
                "name": "InvalidSequenceId",
                "message": "Expected streamSequenceId 2 but received 5.",
            }
        ]
        assert [m["data"] for m in self.sub_t.take()] == ["a"]  # each fragment once
        (closed,) = self.data(1, "x", stream_id="nope")
        assert closed["type"] == "streamClosed" and closed["error"]["name"] == "StreamNotFound"

    def test_an_end_replayed_after_it_closed_gets_the_same_answer(self) -> None:
        self.start()
        first = self.send(type="streamEnd", streamId="s1")
        assert self.send(type="streamEnd", streamId="s1") == first

    def test_an_abort_reaches_subscribers_as_a_user_error(self) -> None:
        self.start()
        error = {"message": "boom", "userErrorCode": "E1"}
        assert self.send(type="streamEnd", streamId="s1", error=error) == [
            {"type": "streamClosed", "streamId": "s1"}
        ]
        (terminal,) = self.sub_t.take()
        assert terminal["stream"] == {
            "streamId": "s1",
            "streamSequenceId": 1,
            "endOfStream": True,
            "error": {"name": "UserError", "message": "boom", "userErrorCode": "E1"},
        }

    def test_refusals(self) -> None:
        outsider, outsider_t = make_connection(user_id="eve")
        self.node.connect(outsider)
        outsider_t.frames.clear()
        self.node.receive(
            outsider, frame(type="sendToGroup", group="g", stream={"streamId": "s"}), True
        )
        (closed,) = outsider_t.take()
        assert closed["error"]["name"] == "Forbidden"
        for bad in (
            {"type": "sendToGroup", "group": "g", "stream": {"streamId": "s", "idleTimeoutMs": 0}},
            {"type": "sendToGroup", "group": "g", "data": "x", "stream": {"streamId": "s"}},
            {"type": "sendToGroup", "group": "", "stream": {"streamId": "s"}},
            {"type": "sendToGroup", "group": "g", "stream": {"streamId": "s" * 300}},
        ):
            (closed,) = self.send(**bad)
            assert closed["type"] == "streamClosed"
            assert closed["error"]["name"] == "BadRequest", bad
        self.start()
        (closed,) = self.start()  # already open: refused, the first goes on
        assert closed["error"]["name"] == "BadRequest"
        assert self.data(1, "still") == [
            {"type": "streamAck", "streamId": "s1", "expectedSequenceId": 2}
        ]

    def test_a_half_fragment_ends_the_stream_as_cancelled(self) -> None:
        self.start()
        (closed,) = self.send(type="streamData", streamId="s1", streamSequenceId=1)
        assert closed["error"]["name"] == "BadRequest"
        (terminal,) = self.sub_t.take()
        assert terminal["stream"]["error"]["name"] == "Cancelled"

    def test_idle_timeout_and_keepalive(self) -> None:
        self.start(idleTimeoutMs=500)
        self.clock.now += 0.4
        assert self.send(type="streamData", streamId="s1") == []  # a keepalive
        self.clock.now += 0.4
        self.node.expire(0)
        assert self.pub_t.take() == []
        self.clock.now += 0.2
        self.node.expire(0)
        assert self.pub_t.take() == [
            {
                "type": "streamClosed",
                "streamId": "s1",
                "error": {"name": "IdleTimeout", "message": "No stream activity within 500 ms."},
            }
        ]
        (terminal,) = self.sub_t.take()
        assert terminal["stream"]["error"]["name"] == "IdleTimeout"

    def test_the_publisher_leaving_cancels_its_streams(self) -> None:
        self.start()
        self.node.disconnect(self.pub, "gone")
        (terminal,) = self.sub_t.take()
        assert terminal["stream"]["endOfStream"] is True
        assert terminal["stream"]["error"]["name"] == "Cancelled"
        assert not self.node.streaming

    def test_no_echo_and_reliable_subscribers(self) -> None:
        reliable, reliable_t = make_connection(codec=RELIABLE_JSON)
        self.node.connect(reliable, ["g"])
        self.node.hubs["chat"].join(self.pub, "g")
        reliable_t.frames.clear()
        self.send(type="sendToGroup", group="g", noEcho=True, stream={"streamId": "s"})
        self.data(1, "x", stream_id="s")
        assert self.pub_t.take() == []  # acked above; no echo of its own fragment
        (message,) = messages_of(reliable_t)
        assert message["sequenceId"] == 1 and message["stream"]["streamSequenceId"] == 1

    def test_a_revoked_permission_ends_the_stream(self) -> None:
        self.start()
        self.pub.roles.clear()
        (closed,) = self.data(1, "x")
        assert closed["error"]["name"] == "Forbidden"
        (terminal,) = self.sub_t.take()
        assert terminal["stream"]["error"]["name"] == "Forbidden"


def test_a_frame_without_a_stream_id_is_a_protocol_violation() -> None:
    node = Node()
    conn, transport = make_connection(roles=SEND)
    node.connect(conn)
    node.receive(conn, frame(type="streamData", streamSequenceId=1), True)
    assert transport.closed is not None and transport.closed[0] == 1008


def test_recording_transport_is_used() -> None:
    assert RecordingTransport().frames == []
