"""Flood control: the message-rate rule (``core/ratelimit.py``) and the node's admission.

Time is passed in; a flood is a sequence of ``take(now)`` calls, so a steady flood at any
speed is a few lines, not a socket and a clock.
"""

from __future__ import annotations

import json

import pytest

from webpubsub.core.connection import CloseCode
from webpubsub.core.node import Node
from webpubsub.core.ratelimit import MessageRate, Verdict
from webpubsub.core.requests import CancelInvocation, Invoke
from webpubsub.protocols import PROTOBUF
from webpubsub.protocols.proto.webpubsub_pb2 import UpstreamMessage

from .helpers import make_connection

ALLOW, THROTTLE, CUT = Verdict.ALLOW, Verdict.THROTTLE, Verdict.CUT


def flood(rate: MessageRate, per_second: float, seconds: float) -> list[Verdict]:
    """Messages at a steady ``per_second`` from t=0 until the first CUT (or the end)."""
    verdicts: list[Verdict] = []
    for i in range(int(per_second * seconds)):
        verdicts.append(rate.take(i / per_second))
        if verdicts[-1] is CUT:
            break
    return verdicts


def longest_refusal_run(verdicts: list[Verdict]) -> int:
    longest = run = 0
    for verdict in verdicts:
        run = run + 1 if verdict is not ALLOW else 0
        longest = max(longest, run)
    return longest


@pytest.mark.parametrize("over", [1.1, 2, 10])
def test_a_steady_flood_over_the_rate_is_cut(over: float) -> None:
    """The refill lets one message in every 1/rate seconds, so refusals never come a burst's
    worth in a row (the old rule never cut); those allowed messages no longer forgive."""
    rate = MessageRate(rate=100, burst=50, now=0.0)
    verdicts = flood(rate, 100 * over, seconds=60)
    assert verdicts[-1] is CUT
    assert longest_refusal_run(verdicts[:-1]) < 50
    # Cut after the burst, then another burst's worth refused: not before.
    assert verdicts.count(THROTTLE) == 50


def test_a_flood_faster_than_the_refill_is_cut_after_one_burst_more() -> None:
    rate = MessageRate(rate=100, burst=50, now=0.0)
    assert flood(rate, 100_000, seconds=1) == [ALLOW] * 50 + [THROTTLE] * 50 + [CUT]


def test_a_flood_at_the_rate_is_never_cut() -> None:
    rate = MessageRate(rate=100, burst=50, now=0.0)
    assert set(flood(rate, 100, seconds=60)) == {ALLOW}


def test_refusals_are_forgiven_once_the_bucket_is_full_again() -> None:
    rate = MessageRate(rate=10, burst=5, now=0.0)
    assert [rate.take(0.0) for _ in range(10)] == [ALLOW] * 5 + [THROTTLE] * 5
    assert rate.refused == 5
    assert rate.take(0.3) is ALLOW  # partly refilled: the refusals still count
    assert rate.refused == 5
    assert rate.take(0.3) is ALLOW
    assert rate.take(0.3) is ALLOW
    assert rate.take(0.3) is CUT  # the 6th refusal since the bucket was last full
    rate = MessageRate(rate=10, burst=5, now=0.0)
    for _ in range(10):
        rate.take(0.0)
    assert rate.take(0.5) is ALLOW  # 0.5 s refills all 5: back under the rate
    assert rate.refused == 0


def test_a_client_that_sends_in_bursts_and_waits_is_never_cut() -> None:
    rate = MessageRate(rate=10, burst=5, now=0.0)
    now = 0.0
    for _ in range(100):
        verdicts = [rate.take(now) for _ in range(8)]  # 3 over, then waits its bucket out
        assert verdicts == [ALLOW] * 5 + [THROTTLE] * 3
        now += 0.5
    assert rate.refused == 3


class TestAdmission:
    """The node charges a message before anything looks at it."""

    def test_a_throttled_frame_is_answered_from_its_head_and_never_parsed(self) -> None:
        node = Node(message_rate=1, message_burst=2)
        conn, transport = make_connection(roles=("webpubsub.joinLeaveGroup",))
        node.connect(conn)
        transport.take()
        rate = node.new_rate(0.0)
        assert rate is not None
        join = b'{"type":"joinGroup","group":"g","ackId":1}'
        assert node.admit(conn, join, True, rate, 0.0)
        assert node.admit(conn, join, True, rate, 0.0)
        # Not JSON past its head: parsing it would close the client (1008, invalid JSON).
        broken = b'{"type":"joinGroup","group":"g","ackId":2,"data":[' + b"{" * 10_000
        assert not node.admit(conn, broken, True, rate, 0.0)
        assert transport.closed is None
        (ack,) = transport.take()
        assert ack["ackId"] == 2 and ack["error"]["name"] == "Throttled"
        assert not node.admit(conn, b"\xff not even UTF-8", True, rate, 0.0)  # no ackId: dropped
        assert transport.take() == []

    def test_a_throttled_invoke_still_gets_its_answer(self) -> None:
        """An invoke has no ackId: its caller (the JS client has no timeout) waits for an
        invokeResponse, so a throttled one is answered through the invoke edge."""
        node = Node(message_rate=1, message_burst=1)
        answered: list[Invoke | CancelInvocation] = []
        node.on_invoke = lambda conn, request: answered.append(request)
        conn, _ = make_connection()
        node.connect(conn)
        rate = node.new_rate(0.0)
        assert rate is not None
        frame = b'{"type":"invoke","invocationId":"i7","event":"e","dataType":"text","data":"x"}'
        assert node.admit(conn, frame, True, rate, 0.0)
        assert not node.admit(conn, frame, True, rate, 0.0)
        (request,) = answered
        assert isinstance(request, Invoke)
        assert (request.invocation_id, request.error_name) == ("i7", "Throttled")
        assert request.error and "Too many messages" in request.error

    def test_a_throttled_protobuf_invoke_still_gets_its_answer(self) -> None:
        """As above, over protobuf (spec-next 8): the id is read from the binary frame."""
        node = Node(message_rate=1, message_burst=1)
        answered: list[Invoke | CancelInvocation] = []
        node.on_invoke = lambda conn, request: answered.append(request)
        conn, _ = make_connection(codec=PROTOBUF)
        node.connect(conn)
        rate = node.new_rate(0.0)
        assert rate is not None
        invoke = UpstreamMessage.InvokeEventMessage(event="e", invocation_id="p1")
        frame = UpstreamMessage(invoke_event_message=invoke).SerializeToString()
        assert node.admit(conn, frame, False, rate, 0.0)
        assert not node.admit(conn, frame, False, rate, 0.0)
        (request,) = answered
        assert isinstance(request, Invoke)
        assert (request.invocation_id, request.error_name) == ("p1", "Throttled")

    def test_a_steady_flood_without_ack_ids_is_closed_with_1008(self) -> None:
        node = Node(message_rate=100, message_burst=10)
        conn, transport = make_connection()
        node.connect(conn)
        transport.take()
        rate = node.new_rate(0.0)
        frame = json.dumps({"type": "sendToGroup", "group": "g", "data": 1}).encode()
        for i in range(10_000):
            if not node.admit(conn, frame, True, rate, i / 200):  # twice the rate
                if transport.closed is not None:
                    break
            else:
                node.receive(conn, frame, True)  # no permission: ignored, no ackId
        assert transport.closed is not None
        assert transport.closed[0] == CloseCode.POLICY_VIOLATION
        assert i < 100, i
        assert conn.closed
