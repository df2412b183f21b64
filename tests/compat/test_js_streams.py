"""Group streams through the official ``@azure/web-pubsub-client`` 1.1.0 (spec-next 2):
``openGroupStream`` on one client, ``onGroupStream`` on another, over both JSON
subprotocols; end, abort, the idle timeout and a refusal as the JS client reports them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.nodejs import JsError

from .test_js_sdk import ALL_ROLES, Clients, Line, Rest

pytestmark = pytest.mark.usefixtures("js_service")


def stream_lines(clients: Clients, name: str, until_done: bool = True) -> list[Line]:
    """The stream items client ``name`` printed, up to and with its stream-done line."""
    lines: list[Line] = []
    while True:
        line = clients.driver.wait_for(
            lambda line: (
                line.get("client") == name and line.get("type") in ("stream-item", "stream-done")
            ),
            f"stream lines on {name!r}",
        )
        lines.append(line)
        if line["type"] == "stream-done" or not until_done:
            return lines


@pytest.mark.parametrize("protocol", ["json", "reliable"])
def test_a_stream_reaches_a_subscriber_whole_and_in_order(
    rest: Rest, clients: Clients, protocol: str
) -> None:
    clients.start("pub", user_id="alice", roles=ALL_ROLES, protocol=protocol)
    clients.start("sub", user_id="bob", roles=ALL_ROLES, protocol=protocol)
    clients.call("sub", "joinGroup", "live")
    clients.driver.request("onGroupStream", client="sub")
    opened = clients.driver.request("openStream", client="pub", group="live")
    stream_id = opened["streamId"]
    parts: list[tuple[Any, str]] = [("hello ", "text"), ({"n": 1}, "json"), (b"\x00\x01", "binary")]
    for data, data_type in parts:
        clients.driver.request(
            "streamWrite", client="pub", streamId=stream_id, args=[data, data_type]
        )
    clients.driver.request("streamEnd", client="pub", streamId=stream_id)
    lines = stream_lines(clients, "sub")
    items, done = lines[:-1], lines[-1]
    assert [(i["data"], i["dataType"]) for i in items] == parts
    assert all(i["streamId"] == stream_id and i["group"] == "live" for i in items)
    assert "error" not in done


def test_an_abort_reaches_the_subscriber_as_the_publishers_error(
    rest: Rest, clients: Clients
) -> None:
    clients.start("pub", user_id="alice", roles=ALL_ROLES)
    clients.start("sub", user_id="bob", roles=ALL_ROLES)
    clients.call("sub", "joinGroup", "live")
    clients.driver.request("onGroupStream", client="sub")
    stream_id = clients.driver.request("openStream", client="pub", group="live")["streamId"]
    clients.driver.request("streamWrite", client="pub", streamId=stream_id, args=["a", "text"])
    clients.driver.request(
        "streamAbort",
        client="pub",
        streamId=stream_id,
        args=[{"message": "boom", "userErrorCode": "E1"}],
    )
    *items, done = stream_lines(clients, "sub")
    assert [i["data"] for i in items] == ["a"]
    assert done["error"]["name"] == "UserError"
    assert done["error"]["message"] == "boom"
    assert done["error"]["userErrorCode"] == "E1"


def test_an_idle_stream_times_out_on_both_sides(rest: Rest, clients: Clients) -> None:
    clients.start("pub", user_id="alice", roles=ALL_ROLES)
    clients.start("sub", user_id="bob", roles=ALL_ROLES)
    clients.call("sub", "joinGroup", "live")
    clients.driver.request("onGroupStream", client="sub")
    opened = clients.driver.request(
        "openStream", client="pub", group="live", options={"idleTimeoutInMs": 300}
    )
    stream_id = opened["streamId"]
    clients.driver.request("streamWrite", client="pub", streamId=stream_id, args=["a", "text"])
    *_, done = stream_lines(clients, "sub")
    assert done["error"]["name"] == "IdleTimeout"
    error = clients.driver.wait_for(
        lambda line: line.get("type") == "stream-error" and line.get("streamId") == stream_id,
        "the publisher's stream error",
    )
    assert error["error"]["name"] == "IdleTimeout"


def test_a_stream_without_send_permission_is_refused(rest: Rest, clients: Clients) -> None:
    clients.start("pub", user_id="alice", roles=["webpubsub.joinLeaveGroup"])
    with pytest.raises(JsError) as refused:
        clients.driver.request("openStream", client="pub", group="live")
    assert refused.value.error["name"] == "Forbidden"


def test_no_echo_keeps_the_publishers_own_fragments_away(rest: Rest, clients: Clients) -> None:
    """Acceptance check 13: a member publishing with noEcho gets none of its fragments."""
    clients.start("pub", user_id="alice", roles=ALL_ROLES)
    clients.start("sub", user_id="bob", roles=ALL_ROLES)
    for name in ("pub", "sub"):
        clients.call(name, "joinGroup", "live")
        clients.driver.request("onGroupStream", client=name)
    for no_echo in (True, False):
        opened = clients.driver.request(
            "openStream", client="pub", group="live", options={"noEcho": no_echo}
        )
        stream_id = opened["streamId"]
        clients.driver.request("streamWrite", client="pub", streamId=stream_id, args=["x", "text"])
        clients.driver.request("streamEnd", client="pub", streamId=stream_id)
        *items, _ = stream_lines(clients, "sub")
        assert [i["streamId"] for i in items] == [stream_id]
    # Only the second stream came back to its publisher (its lines follow the first's end).
    *own, done = stream_lines(clients, "pub")
    assert [i["data"] for i in own] == ["x"] and done["streamId"] == stream_id


def test_parallel_streams_stay_apart(rest: Rest, clients: Clients) -> None:
    """Acceptance check 18: two streams with interleaved writes are two GroupStreams."""
    clients.start("pub", user_id="alice", roles=ALL_ROLES)
    clients.start("sub", user_id="bob", roles=ALL_ROLES)
    clients.call("sub", "joinGroup", "live")
    clients.driver.request("onGroupStream", client="sub")
    first = clients.driver.request("openStream", client="pub", group="live")["streamId"]
    second = clients.driver.request("openStream", client="pub", group="live")["streamId"]
    for i in range(3):
        for stream_id in (first, second):
            clients.driver.request(
                "streamWrite", client="pub", streamId=stream_id, args=[f"{stream_id}:{i}", "text"]
            )
    for stream_id in (first, second):
        clients.driver.request("streamEnd", client="pub", streamId=stream_id)
    lines: list[Line] = []
    while sum(line["type"] == "stream-done" for line in lines) < 2:
        lines += stream_lines(clients, "sub", until_done=False)
    for stream_id in (first, second):
        data = [x["data"] for x in lines if x["streamId"] == stream_id and "data" in x]
        assert data == [f"{stream_id}:{i}" for i in range(3)]


def test_a_stream_goes_on_across_a_recovery(rest: Rest, clients: Clients) -> None:
    """Acceptance check 20: the publisher's socket dies mid-stream; the reliable client
    recovers, resends what was not acknowledged, and the subscriber gets every fragment
    once, in order, with no error on either side."""
    clients.start("pub", user_id="alice", roles=ALL_ROLES, protocol="reliable")
    clients.start("sub", user_id="bob", roles=ALL_ROLES, protocol="reliable")
    clients.call("sub", "joinGroup", "live")
    clients.driver.request("onGroupStream", client="sub")
    stream_id = clients.driver.request("openStream", client="pub", group="live")["streamId"]
    for i in (1, 2, 3):
        clients.driver.request(
            "streamWrite", client="pub", streamId=stream_id, args=[str(i), "text"]
        )
    clients.driver.request("dropSocket", client="pub")
    clients.driver.request("streamWrite", client="pub", streamId=stream_id, args=["4", "text"])
    clients.driver.request("streamEnd", client="pub", streamId=stream_id)
    *items, done = stream_lines(clients, "sub")
    assert [i["data"] for i in items] == ["1", "2", "3", "4"]
    assert "error" not in done
    assert clients.driver.unread(lambda line: line.get("type") == "stream-error") == []
    assert (
        clients.driver.unread(
            lambda line: line.get("client") == "pub" and line.get("event") == "disconnected"
        )
        == []
    )


def test_closing_the_publisher_cancels_its_stream(rest: Rest, clients: Clients) -> None:
    """Acceptance check 21: REST closeConnection of the publisher ends the subscriber's
    stream with Cancelled."""
    pub_id = clients.start("pub", user_id="alice", roles=ALL_ROLES)
    clients.start("sub", user_id="bob", roles=ALL_ROLES)
    clients.call("sub", "joinGroup", "live")
    clients.driver.request("onGroupStream", client="sub")
    stream_id = clients.driver.request("openStream", client="pub", group="live")["streamId"]
    clients.driver.request("streamWrite", client="pub", streamId=stream_id, args=["a", "text"])
    rest.call("closeConnection", pub_id)
    *items, done = stream_lines(clients, "sub")
    assert [i["data"] for i in items] == ["a"]
    assert done["error"]["name"] == "Cancelled"


def test_a_zero_idle_timeout_is_refused(rest: Rest, clients: Clients) -> None:
    """Acceptance check 15."""
    clients.start("pub", user_id="alice", roles=ALL_ROLES)
    with pytest.raises(JsError) as refused:
        clients.driver.request(
            "openStream", client="pub", group="live", options={"idleTimeoutInMs": 0}
        )
    assert refused.value.error["name"] == "BadRequest"


def test_a_closed_stream_id_can_be_used_again(rest: Rest, clients: Clients) -> None:
    """Acceptance check 19: after streamClosed the same streamId opens a new stream."""
    clients.start("pub", user_id="alice", roles=ALL_ROLES)
    clients.start("sub", user_id="bob", roles=ALL_ROLES)
    clients.call("sub", "joinGroup", "live")
    clients.driver.request("onGroupStream", client="sub")
    for round_ in range(2):
        for _ in range(100):  # the client may still hold the closed stream for a moment
            try:
                clients.driver.request(
                    "openStream", client="pub", group="live", options={"streamId": "fixed"}
                )
                break
            except JsError as exc:
                assert "exist" in str(exc.error).lower(), exc.error
        clients.driver.request(
            "streamWrite", client="pub", streamId="fixed", args=[f"r{round_}", "text"]
        )
        clients.driver.request("streamEnd", client="pub", streamId="fixed")
        *items, done = stream_lines(clients, "sub")
        assert [i["data"] for i in items] == [f"r{round_}"] and "error" not in done


def test_group_message_events_carry_the_stream_descriptor(rest: Rest, clients: Clients) -> None:
    """Acceptance check 11: fragments and the terminal frame are also group-message events
    with stream.streamSequenceId 1, 2, 3 (the last with endOfStream and data "")."""
    clients.start("pub", user_id="alice", roles=ALL_ROLES)
    clients.start("sub", user_id="bob", roles=ALL_ROLES)
    clients.call("sub", "joinGroup", "live")
    stream_id = clients.driver.request("openStream", client="pub", group="live")["streamId"]
    for part in ("hello ", "world"):
        clients.driver.request("streamWrite", client="pub", streamId=stream_id, args=[part, "text"])
    clients.driver.request("streamEnd", client="pub", streamId=stream_id)
    messages = []
    for _ in range(3):
        line = clients.expect("sub", "group-message")
        messages.append(line["message"])
    assert [m["stream"]["streamSequenceId"] for m in messages] == [1, 2, 3]
    assert {m["stream"]["streamId"] for m in messages} == {stream_id}
    assert {m["fromUserId"] for m in messages} == {"alice"}
    assert [m["data"] for m in messages] == ["hello ", "world", ""]
    assert messages[2]["stream"]["endOfStream"] is True
    assert "endOfStream" not in messages[0]["stream"]
