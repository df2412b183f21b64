"""The client's Sans-I/O core (``webpubsub.client._core``), with no socket and no clock.

Most tests run the core against the service's real node through :class:`tests.client.pair.Pair`;
a few feed it frames by hand where the service would never misbehave on cue.
"""

from __future__ import annotations

import json

import pytest

from tests.client.pair import ALL_ROLES, Pair
from webpubsub.client import (
    AckResult,
    ClientCore,
    ClientOptions,
    ClientStoppedError,
    ConnectedEvent,
    ConnectError,
    DisconnectedEvent,
    Forbidden,
    GroupMessage,
    InvalidMessage,
    ReconnectPolicy,
    RejoinGroupFailedEvent,
    SendTimeoutError,
    State,
    StoppedEvent,
)
from webpubsub.client._core import TRANSITIONS, AbortSocket, AckSettled, StartFailed
from webpubsub.core.message import DataType
from webpubsub.core.node import Node
from webpubsub.core.requests import JoinGroup, LeaveGroup, SendEvent, SendToGroup

RELIABLE = ["json.reliable.webpubsub.azure.v1", "protobuf.reliable.webpubsub.azure.v1"]
PROTOCOLS = [*RELIABLE, "json.webpubsub.azure.v1", "protobuf.webpubsub.azure.v1"]


def settled(pair: Pair) -> dict[int, AckSettled]:
    return {e.ack_id: e for e in pair.take(AckSettled)}


def track(pair: Pair, request: JoinGroup | LeaveGroup | SendToGroup | SendEvent) -> None:
    pair.client.track(request, pair.now, 30.0)
    pair.pump()


def texts(pair: Pair) -> list[str]:
    return [m.data for m in pair.take(GroupMessage)]


class TestLifecycle:
    """States and transitions (module docstring; spec 4.1, 4.7)."""

    def test_every_state_has_its_transitions(self) -> None:
        assert set(TRANSITIONS) == set(State)

    def test_a_forbidden_transition_names_the_states(self) -> None:
        client = ClientCore()
        with pytest.raises(RuntimeError, match="STOPPED to CONNECTED"):
            client._set_state(State.CONNECTED)

    @pytest.mark.parametrize("protocol", PROTOCOLS)
    def test_connected_after_the_connected_message(self, protocol: str) -> None:
        pair = Pair(protocol)
        pair.client.start()
        assert pair.client.state is State.CONNECTING
        pair.connect()
        assert pair.client.state is State.CONNECTED
        assert pair.take(ConnectedEvent) == [ConnectedEvent(pair.conn.connection_id, "alice")]  # type: ignore[union-attr]
        assert pair.client.connection_id == pair.conn.connection_id  # type: ignore[union-attr]

    def test_start_twice_is_an_error(self) -> None:
        pair = Pair()
        pair.start()
        with pytest.raises(RuntimeError, match="already started"):
            pair.client.start()

    def test_a_failed_first_attempt_fails_start_without_stopped(self) -> None:
        client = ClientCore()
        client.start()
        client.next_attempt(0.0)
        error = ConnectError("refused", status_code=401)
        client.attempt_failed(error, 0.0)
        assert client.state is State.STOPPED
        assert client.events_received() == [StartFailed(error)]

    def test_socket_closed_before_connected_fails_start_with_the_close_code(self) -> None:
        client = ClientCore()
        client.start()
        client.next_attempt(0.0)
        client.socket_opened("ws://x/client/hubs/h", 0.0)
        client.socket_closed(1008, "go away", 0.0)
        [failed] = client.events_received()
        assert isinstance(failed, StartFailed)
        assert failed.error.close_code == 1008
        assert "go away" in str(failed.error)

    def test_stop_with_a_socket_completes_when_it_closes(self) -> None:
        pair = Pair()
        pair.start()
        pair.take(ConnectedEvent)
        pair.client.track(SendToGroup("g", b"1", DataType.JSON, 7), pair.now, None)
        assert pair.client.stop() is True
        assert pair.client.state is State.CONNECTED
        pair.client.socket_closed(1000, "", pair.now)
        events = pair.collect()
        cid = pair.conn.connection_id  # type: ignore[union-attr]
        assert events[0] == DisconnectedEvent(cid, None, 1000)
        assert isinstance(events[1], AckSettled)
        assert isinstance(events[1].error, ClientStoppedError)
        assert events[2] == StoppedEvent()
        assert pair.client.state is State.STOPPED

    def test_stop_without_a_socket_is_immediate(self) -> None:
        pair = Pair()
        pair.start()
        pair.drop()
        assert pair.client.state is State.RECOVERING
        assert pair.client.stop() is False
        assert pair.client.state is State.STOPPED
        assert [type(e) for e in pair.collect()] == [DisconnectedEvent, StoppedEvent]
        assert pair.client.stop() is False

    def test_operations_need_a_started_client(self) -> None:
        client = ClientCore()
        with pytest.raises(ClientStoppedError):
            client.track(JoinGroup("g", 1), 0.0, None)
        with pytest.raises(ClientStoppedError):
            client.send_untracked(SendEvent("e", b"x", DataType.TEXT))

    def test_invalid_options(self) -> None:
        with pytest.raises(ValueError, match="unknown subprotocol"):
            ClientOptions(protocol="mqtt")
        with pytest.raises(ValueError, match="ack_timeout"):
            ClientOptions(ack_timeout=0)
        with pytest.raises(ValueError, match="keep_alive_interval"):
            ClientOptions(keep_alive_interval=-1)


class TestAcks:
    """Requests with ackIds (spec 4.5): results, typed errors, timeouts, resends."""

    @pytest.mark.parametrize("protocol", PROTOCOLS)
    def test_success_and_group_bookkeeping(self, protocol: str) -> None:
        pair = Pair(protocol)
        pair.start()
        track(pair, JoinGroup("room", pair.client.new_ack_id()))
        track(pair, JoinGroup("other", pair.client.new_ack_id()))
        track(pair, LeaveGroup("other", pair.client.new_ack_id()))
        results = settled(pair)
        assert [r.result for r in results.values()] == [AckResult(i) for i in (1, 2, 3)]
        assert pair.client.joined_groups == ("room",)
        assert pair.server_groups() == {"room"}

    def test_forbidden_and_bad_request_are_typed(self) -> None:
        pair = Pair(roles=())
        pair.start()
        track(pair, JoinGroup("room", 1))
        track(pair, SendToGroup("", b"x", DataType.TEXT, 2))
        errors = {k: v.error for k, v in settled(pair).items()}
        assert isinstance(errors[1], Forbidden) and errors[1].ack_id == 1
        assert "room" in errors[1].message
        assert isinstance(errors[2], InvalidMessage) and errors[2].name == "BadRequest"
        assert pair.client.joined_groups == ()

    def test_duplicate_is_success(self) -> None:
        pair = Pair()
        pair.start()
        track(pair, SendToGroup("g", b"1", DataType.JSON, 5))
        track(pair, SendToGroup("g", b"1", DataType.JSON, 5))
        first, second = pair.take(AckSettled)
        assert first.result == AckResult(5, False)
        assert second.result == AckResult(5, True)

    def test_a_waiting_ack_id_cannot_be_reused(self) -> None:
        pair = Pair()
        pair.client.start()
        pair.client.track(JoinGroup("g", 1), pair.now, None)
        with pytest.raises(ValueError, match="still waiting"):
            pair.client.track(JoinGroup("h", 1), pair.now, None)
        assert pair.client.new_ack_id() == 2  # ids in use are skipped

    def test_requests_wait_for_the_connection(self) -> None:
        pair = Pair()
        pair.client.start()
        pair.client.track(JoinGroup("room", 1), pair.now, None)
        assert pair.client.data_to_send() == []
        pair.connect()
        assert settled(pair)[1].result == AckResult(1)

    def test_timeout(self) -> None:
        pair = Pair()
        pair.client.start()
        pair.client.track(JoinGroup("room", 1), pair.now, 5.0)
        assert pair.client.get_timer() == pair.now + 5.0
        pair.advance(4.9)
        assert settled(pair) == {}
        pair.advance(0.1)
        error = settled(pair)[1].error
        assert isinstance(error, SendTimeoutError) and isinstance(error, TimeoutError)
        assert pair.client.get_timer() is None

    def test_late_ack_after_abandon_is_ignored(self) -> None:
        pair = Pair()
        pair.start()
        pair.client.track(JoinGroup("room", 1), pair.now, None)
        pair.client.abandon(1)
        pair.pump()
        assert settled(pair) == {}

    @pytest.mark.parametrize("protocol", RELIABLE)
    def test_resent_with_the_same_bytes_after_recovery(self, protocol: str) -> None:
        pair = Pair(protocol)
        pair.start()
        # The request reaches the service, but its ack dies with the socket.
        pair.client.track(SendToGroup("g", b"hi", DataType.TEXT, 9), pair.now, None)
        [payload] = pair.client.data_to_send()
        pair.node.receive(pair.conn, payload, pair.client.codec.text_frames)  # type: ignore[arg-type]
        pair.drop()
        assert settled(pair) == {}
        pair.connect()  # recovery: same connection, the request goes again
        assert pair.sent[-1] == payload
        assert settled(pair)[9].result == AckResult(9, is_duplicated=True)
        assert pair.take(ConnectedEvent) == [ConnectedEvent(pair.conn.connection_id, "alice")]  # type: ignore[union-attr]

    def test_untracked_only_when_connected(self) -> None:
        pair = Pair()
        pair.client.start()
        request = SendToGroup("g", b"x", DataType.TEXT)
        assert pair.client.send_untracked(request) is False
        pair.connect()
        assert pair.client.send_untracked(request) is True
        assert json.loads(pair.client.data_to_send()[0])["type"] == "sendToGroup"


class TestReliable:
    """Sequence ids, batched sequence acks and dedupe (spec 4.7)."""

    @pytest.mark.parametrize("protocol", RELIABLE)
    def test_sequence_acks_are_batched(self, protocol: str) -> None:
        pair = Pair(protocol, sequence_ack_interval=1.0)
        pair.start()
        track(pair, JoinGroup("g", 1))
        for i in range(3):
            pair.publish("g", b"m%d" % i)
        assert pair.client.get_timer() == pair.now + 1.0
        before = len(pair.sent)
        pair.advance(1.0)
        assert len(pair.sent) == before + 1  # one sequenceAck for three messages
        assert len(pair.conn.recovery.buffer) == 0  # type: ignore[union-attr]
        assert pair.client.get_timer() is None

    def test_a_large_backlog_is_acked_at_once(self) -> None:
        pair = Pair(sequence_ack_interval=60.0)
        pair.start()
        track(pair, JoinGroup("g", 1))
        for i in range(300):
            pair.publish("g", b"%d" % i)
        assert json.loads(pair.sent[-1]) == {"type": "sequenceAck", "sequenceId": 300}

    @pytest.mark.parametrize("protocol", RELIABLE)
    def test_no_loss_no_duplicates_across_drops(self, protocol: str) -> None:
        pair = Pair(protocol, sequence_ack_interval=1.0)
        pair.start()
        track(pair, JoinGroup("g", 1))
        expected = []
        for round_ in range(5):
            for i in range(4):  # received, not yet acknowledged: replayed after recovery
                expected.append(f"{round_}.{i}")
                pair.publish("g", expected[-1].encode())
            if round_ % 2:
                pair.advance(1.0)  # some rounds get acknowledged before the drop
            pair.drop()
            expected.append(f"{round_}.lost")  # sent while the socket is down
            pair.publish("g", expected[-1].encode())
            pair.connect()
            assert pair.client.state is State.CONNECTED
        assert texts(pair) == expected
        assert pair.take(DisconnectedEvent) == []
        assert len(pair.take(ConnectedEvent)) == 1

    def test_sequence_ids_restart_with_a_new_connection(self) -> None:
        pair = Pair(sequence_ack_interval=60.0)
        pair.start()
        track(pair, JoinGroup("g", 1))
        pair.publish("g", b"a")
        pair.node.close_all(1008, "bye")  # the service ends the connection
        pair.pump()
        pair.connect()  # a new connection: its ids start at 1 again
        pair.pump()
        pair.publish("g", b"b")
        assert texts(pair) == ["a", "b"]


class TestRecovery:
    """Dropped connections: recover, or give up and reconnect (spec 4.7, 4.10)."""

    def test_recovery_url_keeps_the_query_and_adds_the_token(self) -> None:
        pair = Pair()
        pair.start()
        pair.drop()
        attempt = pair.client.next_attempt(pair.now)
        assert attempt is not None and attempt.url is not None and attempt.delay == 0
        assert attempt.url.startswith("ws://service.test/client/hubs/chat?access_token=t0&")
        assert f"awps_connection_id={pair.conn.connection_id}" in attempt.url  # type: ignore[union-attr]
        assert "awps_reconnection_token=" in attempt.url

    def test_retries_recovery_then_gives_up_and_reconnects(self) -> None:
        pair = Pair(recovery_timeout=3.0, recovery_delay=1.0)
        pair.start()
        track(pair, JoinGroup("g", 1))
        old = pair.client.connection_id
        pair.drop()
        pair.refuse_connections = True
        pair.connect()
        attempt = pair.client.next_attempt(pair.now)
        assert attempt is not None and attempt.url is not None and attempt.delay == 1.0
        pair.advance(3.0)
        attempt = pair.client.next_attempt(pair.now)  # past the window: a fresh connection
        assert attempt is not None and attempt.url is None and attempt.delay == 0
        pair.collect()
        assert pair.take(DisconnectedEvent) == [DisconnectedEvent(old, None, 1006)]
        assert pair.client.state is State.CONNECTING

    def test_refused_recovery_reconnects_and_rejoins(self) -> None:
        pair = Pair(node=Node(recovery_window=5.0))
        pair.start()
        track(pair, JoinGroup("room", 1))
        pair.take(ConnectedEvent)
        old = pair.client.connection_id
        settled(pair)
        pair.drop()
        pair.advance(10.0)  # the service forgets the connection (the client still tries)
        pair.connect()  # recovery refused: 1008
        assert pair.take(DisconnectedEvent) == [DisconnectedEvent(old, None, 1008)]
        assert pair.client.state is State.DISCONNECTED
        pair.connect()  # a new connection, with the group rejoined before `connected`
        assert pair.client.connection_id != old
        assert pair.server_groups() == {"room"}
        assert json.loads(pair.sent[-1])["type"] == "joinGroup"
        assert [type(e) for e in pair.events] == [ConnectedEvent]

    def test_1008_after_open_is_not_recovered(self) -> None:
        pair = Pair("json.reliable.webpubsub.azure.v1")
        pair.start()
        pair.node.close_all(1008, "Closed by the app server.")
        pair.pump()
        [event] = pair.take(DisconnectedEvent)
        assert event.close_code == 1008 and event.message == "Closed by the app server."
        assert pair.client.state is State.DISCONNECTED

    def test_non_reliable_protocols_reconnect(self) -> None:
        pair = Pair("json.webpubsub.azure.v1")
        pair.start()
        pair.drop()
        assert pair.client.state is State.DISCONNECTED
        assert len(pair.take(DisconnectedEvent)) == 1

    def test_rejoin_failure_is_reported_and_connected_still_fires(self) -> None:
        pair = Pair()
        pair.start()
        track(pair, JoinGroup("room", 1))
        pair.take(ConnectedEvent)
        pair.node.close_all(1008, "bye")
        pair.pump()
        pair.roles = ()  # the new connection may not join
        pair.connect()
        [failed] = pair.take(RejoinGroupFailedEvent)
        assert failed.group == "room" and isinstance(failed.error, Forbidden)
        assert len(pair.take(ConnectedEvent)) == 1

    def test_rejoin_can_be_turned_off(self) -> None:
        pair = Pair(auto_rejoin_groups=False)
        pair.start()
        track(pair, JoinGroup("room", 1))
        pair.node.close_all(1008, "bye")
        pair.pump()
        pair.connect()
        assert pair.server_groups() == set()

    def test_pending_requests_go_after_the_rejoins(self) -> None:
        pair = Pair()
        pair.start()
        track(pair, JoinGroup("room", 1))
        pair.node.close_all(1008, "bye")
        pair.pump()
        pair.client.track(LeaveGroup("room", 2), pair.now, None)  # made while disconnected
        pair.connect()
        kinds = [json.loads(p)["type"] for p in pair.sent[-2:]]
        assert kinds == ["joinGroup", "leaveGroup"]
        assert pair.server_groups() == set()
        assert pair.client.joined_groups == ()

    def test_without_auto_reconnect_a_lost_connection_stops(self) -> None:
        pair = Pair("json.webpubsub.azure.v1", auto_reconnect=False)
        pair.start()
        pair.client.track(JoinGroup("g", 1), pair.now, None)
        pair.drop()
        assert pair.client.state is State.STOPPED
        kinds = [type(e) for e in pair.events if not isinstance(e, ConnectedEvent)]
        assert kinds == [DisconnectedEvent, AckSettled, StoppedEvent]

    def test_reconnect_backoff_and_giving_up(self) -> None:
        policy = ReconnectPolicy(initial_delay=1, max_delay=3, multiplier=2, max_attempts=3)
        pair = Pair("json.webpubsub.azure.v1", reconnect_policy=policy)
        pair.start()
        pair.drop()
        pair.refuse_connections = True
        delays = []
        while (attempt := pair.client.next_attempt(pair.now)) is not None:
            delays.append(attempt.delay)
            pair.client.attempt_failed(ConnectError("refused"), pair.now)
        assert delays == [0, 1, 2, 3]
        assert pair.client.state is State.STOPPED
        assert isinstance(pair.collect()[-1], StoppedEvent)


class TestKeepAlive:
    """Pings on silence, and a dead socket dropped (spec 4.9)."""

    def test_ping_after_silence_and_pong(self) -> None:
        pair = Pair(keep_alive_interval=20.0, keep_alive_timeout=120.0)
        pair.start()
        assert pair.client.get_timer() == pair.now + 20.0
        pair.advance(20.0)
        assert json.loads(pair.sent[-1]) == {"type": "ping"}
        assert pair.client.get_timer() == pair.now + 20.0  # the pong counted as traffic

    def test_silence_past_the_timeout_drops_the_socket(self) -> None:
        pair = Pair(keep_alive_interval=0, keep_alive_timeout=30.0)
        pair.start()
        pair.socket = None  # the service stops answering (half-open)
        pair.advance(30.0)
        assert pair.take(AbortSocket) == [AbortSocket("No message from the service for 30 s.")]
        assert pair.client.get_timer() is None


class TestReconnectPolicy:
    def test_delays(self) -> None:
        policy = ReconnectPolicy(initial_delay=1, max_delay=10, multiplier=3, jitter=0.5)
        assert [policy.delay(n, 0.0) for n in range(5)] == [0, 1, 3, 9, 10]
        assert policy.delay(2, 0.999) == pytest.approx(1.5, rel=1e-2)
        assert ReconnectPolicy(max_attempts=1).delay(2, 0.0) is None


def test_all_roles_constant() -> None:
    assert "webpubsub.joinLeaveGroup" in ALL_ROLES
