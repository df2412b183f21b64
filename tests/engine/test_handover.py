"""Which commands a moved connection still needs (engine/handover.py), without Redis."""

from __future__ import annotations

from webpubsub.core import commands as c
from webpubsub.engine.handover import (
    MoveAnswer,
    MoveRequest,
    PendingMove,
    decode_move,
)

A, B, C = b"node-a", b"node-b", b"node-c"
REQUEST = MoveRequest("id", "token", "json.reliable.webpubsub.azure.v1", "node-a", "node-b")


def group(n: int) -> c.Command:
    return c.AddToGroup(c.ToConnection("id"), f"g{n}")


class TestPendingMove:
    def test_the_request_splits_the_channel(self) -> None:
        move = PendingMove("hub", REQUEST, A)
        move.remote(C, 1, group(1))  # before our request on the channel: the holder had it
        move.own(B, 7, group(2))  # ours, queued after the request: after it on the channel
        move.echoed = True
        move.remote(C, 2, group(3))
        move.remote(A, 10, group(4))  # the holder's, applied there before it let go
        move.remote(A, 11, group(5))  # the holder's, after it let go
        move.own(B, 8, group(6))
        assert move.commands(mark=10) == [group(2), group(3), group(5), group(6)]

    def test_messages_round_trip_and_garbage_is_none(self) -> None:
        answer = MoveAnswer("id", "node-b", True, "", 42)
        assert decode_move(REQUEST.encode()) == REQUEST
        assert decode_move(answer.encode()) == answer
        for junk in (b"", b"{", b'{"t":"mvreq"}', b'{"t":"mvans","c":1}', b"[1]", b'"\\ud800"'):
            assert decode_move(junk) is None
