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
