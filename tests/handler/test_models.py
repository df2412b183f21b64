"""Requests, answers and connection state (``_models``)."""

from __future__ import annotations

import base64

import pytest

from webpubsub.handler import (
    ConnectionContext,
    ConnectResponse,
    DataType,
    EventHandlerError,
    UserEventRequest,
    UserEventResponse,
)
from webpubsub.handler._models import decode_states, encode_states


class TestConnectionState:
    """Connection state as base64 JSON, like express's setState (spec 5.9)."""

    def test_round_trip(self) -> None:
        states = {"name": "ü", "n": 1, "list": [1, {"x": None}]}
        assert decode_states(encode_states(states)) == states

    @pytest.mark.parametrize(
        "value",
        [
            None,
            "",
            "not base64!",
            base64.b64encode(b"not json").decode(),
            base64.b64encode(b"[1, 2]").decode(),
            base64.b64encode(b"\xff\xfe").decode(),
            "e30",  # base64 of {} without its padding
        ],
    )
    def test_anything_else_reads_as_no_states(self, value: str | None) -> None:
        assert decode_states(value) == {}

    def test_set_get_delete_clear(self) -> None:
        context = ConnectionContext(hub="h", connection_id="c", event_name="connect")
        assert not context.states_changed
        context.set_state("a", 1)
        context.set_state("b", [2])
        assert context.get_state("a") == 1
        assert context.get_state("missing", "default") == "default"
        context.delete_state("a")
        context.delete_state("never-set")
        assert dict(context.states) == {"b": [2]}
        assert context.states_changed
        context.clear_states()
        assert dict(context.states) == {}

    def test_states_view_is_read_only(self) -> None:
        context = ConnectionContext(hub="h", connection_id="c", event_name="e", states={"a": 1})
        with pytest.raises(TypeError):
            context.states["a"] = 2  # type: ignore[index]

    def test_values_must_be_json(self) -> None:
        context = ConnectionContext(hub="h", connection_id="c", event_name="connect")
        with pytest.raises(TypeError, match="JSON-serialisable"):
            context.set_state("s", {1, 2})
        assert not context.states_changed

    def test_non_blocking_events_cannot_change_state(self) -> None:
        context = ConnectionContext(
            hub="h", connection_id="c", event_name="connected", writable=False
        )
        with pytest.raises(RuntimeError, match="only connect and user events"):
            context.set_state("a", 1)
        with pytest.raises(RuntimeError, match="only connect and user events"):
            context.delete_state("a")
        with pytest.raises(RuntimeError, match="only connect and user events"):
            context.clear_states()


class TestConnectResponse:
    def test_lists_become_tuples(self) -> None:
        response = ConnectResponse(groups=(g for g in ["a", "b"]), roles=["r"])
        assert response.groups == ("a", "b")
        assert response.to_json() == {"groups": ["a", "b"], "roles": ["r"]}

    @pytest.mark.parametrize(
        ("kwargs", "error"),
        [
            ({"user_id": ""}, ValueError),
            ({"subprotocol": ""}, ValueError),
            ({"user_id": 1}, TypeError),
            ({"groups": "room"}, TypeError),
            ({"groups": [""]}, ValueError),
            ({"roles": [1]}, TypeError),
        ],
    )
    def test_invalid(self, kwargs: dict[str, object], error: type[Exception]) -> None:
        with pytest.raises(error):
            ConnectResponse(**kwargs)  # type: ignore[arg-type]


class TestUserEventResponse:
    def test_helpers(self) -> None:
        assert UserEventResponse.text("é") == UserEventResponse("é".encode(), DataType.TEXT)
        assert UserEventResponse.json([1, "a"]).content == b'[1,"a"]'
        assert UserEventResponse.binary(bytearray(b"\x00")).content == b"\x00"
        assert UserEventResponse.binary(b"x").content_type == "application/octet-stream"

    def test_type_errors(self) -> None:
        with pytest.raises(TypeError):
            UserEventResponse.text(b"x")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            UserEventResponse.binary("x")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            UserEventResponse.json(object())
        with pytest.raises(TypeError):
            UserEventResponse("x")  # type: ignore[arg-type]


class TestUserEventRequest:
    def test_text_and_json(self) -> None:
        context = ConnectionContext(hub="h", connection_id="c", event_name="m")
        request = UserEventRequest(context, b'{"a":1}', DataType.BINARY, b'{"a":1}')
        assert request.text == '{"a":1}'
        assert request.json() == {"a": 1}


class TestEventHandlerError:
    def test_status_and_detail(self) -> None:
        error = EventHandlerError(401, "no token")
        assert (error.status, error.detail, str(error)) == (401, "no token", "401 no token")

    @pytest.mark.parametrize("status", [200, 399, 600, "401"])
    def test_needs_an_error_status(self, status: object) -> None:
        with pytest.raises(ValueError, match="4xx or 5xx"):
            EventHandlerError(status)  # type: ignore[arg-type]
