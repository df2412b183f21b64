"""The pure decisions of the event handler (``_cloudevents``), tested without a server."""

from __future__ import annotations

import json

import pytest

from tests.handler.helpers import CONNECTION_ID, KEY, OTHER_KEY, ce_headers, signature
from webpubsub.core.events import header_value
from webpubsub.handler import (
    ConnectionContext,
    ConnectRequest,
    ConnectResponse,
    DataType,
    EventHandlerError,
    UserEventRequest,
    UserEventResponse,
)
from webpubsub.handler._cloudevents import (
    PREFLIGHT,
    EventKind,
    Route,
    allowed_hosts,
    answer,
    attribute,
    classify,
    context_of,
    host_of,
    parse_request,
    preflight,
    signature_valid,
)


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


class TestClassify:
    """Which requests are ours (spec 5.2, 5.3; express's isWebPubSubRequest)."""

    @pytest.mark.parametrize(
        ("event", "kind", "name"),
        [
            ("connect", EventKind.CONNECT, "connect"),
            ("connected", EventKind.CONNECTED, "connected"),
            ("disconnected", EventKind.DISCONNECTED, "disconnected"),
            ("message", EventKind.USER, "message"),
            ("chat.typing", EventKind.USER, "chat.typing"),
        ],
    )
    def test_events(self, event: str, kind: EventKind, name: str) -> None:
        assert classify("POST", lower(ce_headers(event)), "chat") == Route(kind, name)

    def test_preflight(self) -> None:
        headers = {"webhook-request-origin": "h", "ce-awpsversion": "1.0"}
        assert classify("OPTIONS", headers, "chat") is PREFLIGHT

    def test_hub_is_compared_case_insensitively(self) -> None:
        assert classify("POST", lower(ce_headers("connect", hub="ChAt")), "CHAT") is not None

    @pytest.mark.parametrize(
        "change",
        [
            {"ce-awpsversion": None},
            {"webhook-request-origin": None},
            {"ce-hub": None},
            {"ce-hub": "other"},
            {"ce-type": "com.example.connect"},
            {"ce-type": "azure.webpubsub.sys.joined"},
            {"ce-type": "azure.webpubsub.sys.user"},
            {"ce-type": "azure.webpubsub.other.connect"},
        ],
    )
    def test_not_ours(self, change: dict[str, str | None]) -> None:
        headers = lower(ce_headers("connect"))
        for name, value in change.items():
            if value is None:
                del headers[name]
            else:
                headers[name] = value
        assert classify("POST", headers, "chat") is None

    @pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "HEAD"])
    def test_other_methods_are_not_ours(self, method: str) -> None:
        assert classify(method, lower(ce_headers("connect")), "chat") is None

    def test_user_event_name_falls_back_to_the_type(self) -> None:
        headers = lower(ce_headers("message"))
        del headers["ce-eventname"]
        assert classify("POST", headers, "chat") == Route(EventKind.USER, "message")


class TestPreflight:
    """Abuse protection (spec 5.2)."""

    def test_any_origin_by_default(self) -> None:
        response = preflight("anything.example", None)
        assert response.status == 200
        assert dict(response.headers)["WebHook-Allowed-Origin"] == "*"

    def test_allowed_origin_is_named(self) -> None:
        allowed = allowed_hosts(["https://Contoso.WebPubSub.Azure.com/", "127.0.0.1"])
        assert allowed == frozenset({"contoso.webpubsub.azure.com", "127.0.0.1"})
        response = preflight("contoso.webpubsub.azure.com", allowed)
        assert response.status == 200
        assert dict(response.headers)["WebHook-Allowed-Origin"] == "contoso.webpubsub.azure.com"

    def test_list_of_origins(self) -> None:
        response = preflight("a.example, b.example", allowed_hosts(["http://b.example:8080"]))
        assert dict(response.headers)["WebHook-Allowed-Origin"] == "b.example"

    def test_other_origin_is_refused(self) -> None:
        response = preflight("evil.example", allowed_hosts(["good.example"]))
        assert response.status == 400
        assert "WebHook-Allowed-Origin" not in dict(response.headers)

    def test_star_allows_any(self) -> None:
        assert allowed_hosts(["good.example", "*"]) is None

    def test_endpoint_without_host_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="no host"):
            allowed_hosts(["https://"])

    @pytest.mark.parametrize(
        ("text", "host"),
        [
            ("https://X.example:443/path", "x.example"),
            ("x.example:8080", "x.example"),
            ("X.Example", "x.example"),
            ("http://[::1]:8080", "::1"),
            ("", ""),
        ],
    )
    def test_host_of(self, text: str, host: str) -> None:
        assert host_of(text) == host


class TestSignature:
    """``ce-signature`` (spec 5.4)."""

    def test_match(self) -> None:
        assert signature_valid(signature(CONNECTION_ID, KEY), CONNECTION_ID, [KEY])

    def test_any_listed_signature_may_match_any_key(self) -> None:
        header = signature(CONNECTION_ID, OTHER_KEY, KEY)
        assert signature_valid(header, CONNECTION_ID, [KEY])
        assert signature_valid(signature(CONNECTION_ID, OTHER_KEY), CONNECTION_ID, [KEY, OTHER_KEY])

    def test_hex_case_does_not_matter(self) -> None:
        header = signature(CONNECTION_ID, KEY).upper().replace("SHA256=", "sha256=")
        assert signature_valid(header, CONNECTION_ID, [KEY])

    @pytest.mark.parametrize(
        "header",
        [
            None,
            "",
            "sha256=",
            "sha256=00",
            "md5=" + signature(CONNECTION_ID, KEY).partition("=")[2],
            signature("other-connection", KEY),
            signature(CONNECTION_ID, OTHER_KEY),
            "sha256=é",
        ],
    )
    def test_mismatch(self, header: str | None) -> None:
        assert not signature_valid(header, CONNECTION_ID, [KEY])


class TestContext:
    def test_headers_become_the_context(self) -> None:
        headers = lower(ce_headers("message", subprotocol="json.webpubsub.azure.v1"))
        context = context_of(Route(EventKind.USER, "message"), headers)
        assert context.hub == "chat"
        assert context.connection_id == CONNECTION_ID
        assert context.user_id == "user1"
        assert context.event_name == "message"
        assert context.subprotocol == "json.webpubsub.azure.v1"
        assert context.origin == "127.0.0.1"
        assert context.signature == headers["ce-signature"]
        assert context.event_id == "1"
        assert context.states == {}

    def test_anonymous_user_is_none(self) -> None:
        headers = lower(ce_headers("connected", user_id=None))
        assert context_of(Route(EventKind.CONNECTED, "connected"), headers).user_id is None

    def test_missing_connection_id_is_400(self) -> None:
        headers = lower(ce_headers("connect"))
        del headers["ce-connectionid"]
        with pytest.raises(EventHandlerError) as refused:
            context_of(Route(EventKind.CONNECT, "connect"), headers)
        assert refused.value.status == 400


def context(event: str = "connect", writable: bool = True) -> ConnectionContext:
    return ConnectionContext(hub="chat", connection_id="c", event_name=event, writable=writable)


class TestParse:
    def test_connect_tolerates_scalars_and_missing_maps(self) -> None:
        body = json.dumps({"claims": {"iat": 1723005952, "sub": "u"}, "subprotocols": ["p"]})
        request = parse_request(Route(EventKind.CONNECT, "connect"), context(), "", body.encode())
        assert isinstance(request, ConnectRequest)
        assert request.claims == {"iat": ["1723005952"], "sub": ["u"]}
        assert request.query == {}
        assert request.subprotocols == ["p"]

    def test_connect_with_empty_body(self) -> None:
        request = parse_request(Route(EventKind.CONNECT, "connect"), context(), "", b"")
        assert isinstance(request, ConnectRequest)
        assert request.claims == {}

    @pytest.mark.parametrize(
        "body",
        [b"{", b"[]", b'{"claims": []}', b'{"subprotocols": "p"}', b'{"clientCertificates": [1]}'],
    )
    def test_bad_connect_bodies_are_400(self, body: bytes) -> None:
        with pytest.raises(EventHandlerError) as refused:
            parse_request(Route(EventKind.CONNECT, "connect"), context(), "", body)
        assert refused.value.status == 400

    @pytest.mark.parametrize(
        ("content_type", "body", "data_type", "data"),
        [
            ("text/plain", "héllo".encode(), DataType.TEXT, "héllo"),
            ("text/plain; charset=utf-8", b"x", DataType.TEXT, "x"),
            ("Application/JSON; charset=utf-8", b'{"a": [1]}', DataType.JSON, {"a": [1]}),
            ("application/octet-stream", b"\x00\xff", DataType.BINARY, b"\x00\xff"),
            ("application/x-protobuf", b"\x08\x01", DataType.BINARY, b"\x08\x01"),
            ("", b"raw", DataType.BINARY, b"raw"),
        ],
    )
    def test_user_event_data(
        self, content_type: str, body: bytes, data_type: DataType, data: object
    ) -> None:
        request = parse_request(
            Route(EventKind.USER, "message"), context("message"), content_type, body
        )
        assert isinstance(request, UserEventRequest)
        assert request.data_type is data_type
        assert request.data == data
        assert request.content == body
        assert request.content_type == content_type

    @pytest.mark.parametrize(
        ("content_type", "body"), [("text/plain", b"\xff"), ("application/json", b"{x")]
    )
    def test_undecodable_user_event_is_400(self, content_type: str, body: bytes) -> None:
        with pytest.raises(EventHandlerError) as refused:
            parse_request(Route(EventKind.USER, "m"), context("m"), content_type, body)
        assert refused.value.status == 400


class TestAnswer:
    def connect(self, subprotocols: list[str] | None = None) -> ConnectRequest:
        return ConnectRequest(context(), subprotocols=subprotocols or [])

    def user_event(self) -> UserEventRequest:
        return UserEventRequest(context("message"), "x", DataType.TEXT, b"x", "text/plain")

    def test_connect_none_is_204(self) -> None:
        assert answer(self.connect(), None).status == 204

    def test_connect_response_is_json(self) -> None:
        result = ConnectResponse(user_id="u", groups=["g"], roles=[], subprotocol="p")
        response = answer(self.connect(["p"]), result)
        assert response.status == 200
        assert json.loads(response.body) == {
            "userId": "u",
            "groups": ["g"],
            "roles": [],
            "subprotocol": "p",
        }
        assert dict(response.headers)["Content-Type"].startswith("application/json")

    def test_unset_fields_are_left_out(self) -> None:
        assert json.loads(answer(self.connect(), ConnectResponse()).body) == {}

    def test_subprotocol_must_be_offered(self) -> None:
        with pytest.raises(ValueError, match="did not offer"):
            answer(self.connect(["a"]), ConnectResponse(subprotocol="b"))

    def test_wrong_result_type(self) -> None:
        with pytest.raises(TypeError, match="ConnectResponse or None"):
            answer(self.connect(), {"userId": "u"})
        with pytest.raises(TypeError, match="UserEventResponse, str, bytes or None"):
            answer(self.user_event(), 42)

    @pytest.mark.parametrize(
        ("result", "content_type", "body"),
        [
            ("hi", "text/plain; charset=utf-8", b"hi"),
            (b"\x01", "application/octet-stream", b"\x01"),
            (UserEventResponse.json({"a": 1}), "application/json; charset=utf-8", b'{"a":1}'),
            (UserEventResponse.text(""), "text/plain; charset=utf-8", b""),
        ],
    )
    def test_user_event_results(self, result: object, content_type: str, body: bytes) -> None:
        response = answer(self.user_event(), result)
        assert response.status == 200
        assert dict(response.headers)["Content-Type"] == content_type
        assert response.body == body

    def test_user_event_none_is_204(self) -> None:
        assert answer(self.user_event(), None).status == 204

    def test_changed_states_go_in_a_header(self) -> None:
        request = self.user_event()
        assert answer(request, None).headers == ()
        request.context.set_state("n", 1)
        [(name, value)] = answer(request, None).headers
        assert name == "ce-connectionState"
        assert value == "eyJuIjoxfQ=="  # base64 of {"n":1}


class TestAttributeEncoding:
    """Attributes that can be non-ASCII travel percent-encoded (CloudEvents HTTP binding
    1.0.2, 3.1.3.2): the service encodes with ``header_value``, the handler decodes."""

    @pytest.mark.parametrize(
        "value",
        ["alice", "José", "张伟", "héllo", "a b", 'say "hi"', "100%", "%41", "🎉", "tab\there", ""],
    )
    def test_round_trip(self, value: str) -> None:
        encoded = header_value(value)
        assert encoded.isascii() and encoded.isprintable() and " " not in encoded
        assert attribute({"ce-userid": encoded}, "ce-userid") == value

    def test_usual_ids_are_unchanged(self) -> None:
        usual = "user-1_a.b~c@example.com+tag/x=y,z;(k):[v]{w}!*'?#&$^|`<>\\"
        assert header_value(usual) == usual

    def test_non_ascii_is_utf8_percent_encoded(self) -> None:
        assert header_value("José") == "Jos%C3%A9"
        assert header_value("100%") == "100%25"

    def test_raw_utf8_from_another_sender_is_understood(self) -> None:
        # ASGI and WSGI servers hand over header bytes as latin-1 text.
        raw = "张伟".encode().decode("latin-1")
        assert attribute({"ce-userid": raw}, "ce-userid") == "张伟"

    def test_context_and_route_are_decoded(self) -> None:
        headers = lower(ce_headers("h%C3%A9llo", user_id="Jos%C3%A9"))
        route = classify("POST", headers, headers["ce-hub"])
        assert route == Route(EventKind.USER, "héllo")
        context = context_of(route, headers)
        assert (context.user_id, context.event_name) == ("José", "héllo")
