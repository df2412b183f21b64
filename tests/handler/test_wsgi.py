"""The event handler as a WSGI app (``as_wsgi``) under the stdlib server, over real HTTP.

Every app is wrapped in ``wsgiref.validate.validator``, so a PEP 3333 violation fails the test.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment
from wsgiref.validate import validator

import httpx
import pytest

from tests.handler.helpers import (
    KEY,
    ce_headers,
    connect_body,
    decode_state,
    preflight_headers,
    serve_wsgi,
)
from webpubsub.handler import (
    ConnectRequest,
    ConnectResponse,
    EventHandlerError,
    UserEventRequest,
    UserEventResponse,
    WebPubSubEventHandler,
)

PATH = "/eventhandler"


def inner(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"inner {environ['PATH_INFO']}".encode()]


async def handle_connect(request: ConnectRequest) -> ConnectResponse:
    if "name" not in request.query:
        raise EventHandlerError(401, "who are you?")
    request.context.set_state("name", request.query["name"][0])
    return ConnectResponse(user_id=request.query["name"][0], groups=["room"])


def handle_user_event(request: UserEventRequest) -> UserEventResponse:
    """A plain (not async) function: WSGI calls it inline."""
    if request.data == "crash":
        raise RuntimeError("boom")
    return UserEventResponse.binary(request.context.get_state("name", "?").encode() + b"!")


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    handler = WebPubSubEventHandler(
        "chat",
        path=PATH,
        access_keys=[KEY],
        handle_connect=handle_connect,
        handle_user_event=handle_user_event,
        max_body_size=1024,
    )
    with serve_wsgi(validator(handler.as_wsgi(inner))) as running:
        yield running


def post(client: httpx.Client, event: str, body: bytes, **headers: Any) -> httpx.Response:
    return client.post(f"{PATH}/{event}", content=body, headers=ce_headers(event, **headers))


class TestWSGI:
    def test_preflight(self, client: httpx.Client) -> None:
        response = client.options(f"{PATH}/validate", headers=preflight_headers())
        assert response.status_code == 200
        assert response.headers["webhook-allowed-origin"] == "*"

    def test_connect_with_an_async_function(self, client: httpx.Client) -> None:
        response = post(client, "connect", connect_body(query={"name": ["wes"]}))
        assert response.status_code == 200
        assert response.json() == {"userId": "wes", "groups": ["room"]}
        assert decode_state(response.headers["ce-connectionstate"]) == {"name": "wes"}

    def test_refusal(self, client: httpx.Client) -> None:
        response = post(client, "connect", connect_body())
        assert (response.status_code, response.text) == (401, "who are you?")

    def test_user_event_with_state(self, client: httpx.Client) -> None:
        state = post(client, "connect", connect_body(query={"name": ["wes"]})).headers[
            "ce-connectionstate"
        ]
        response = post(client, "message", b"hi", state=state)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.content == b"wes!"

    def test_signature(self, client: httpx.Client) -> None:
        assert post(client, "message", b"hi", keys=()).status_code == 401

    def test_body_limit(self, client: httpx.Client) -> None:
        assert post(client, "message", b"x" * 2048).status_code == 413

    def test_exception_is_logged_and_answered_500(
        self, client: httpx.Client, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.ERROR, logger="webpubsub.handler"):
            response = post(client, "message", b"crash")
        assert (response.status_code, response.text) == (500, "Internal Server Error")
        [record] = [r for r in caplog.records if r.name == "webpubsub.handler"]
        assert record.exc_info is not None and record.exc_info[0] is RuntimeError

    def test_non_blocking_events(self, client: httpx.Client) -> None:
        for event in ("connected", "disconnected"):
            response = post(client, event, b"{}")
            assert (response.status_code, response.content) == (200, b"")

    def test_other_requests_reach_the_app(self, client: httpx.Client) -> None:
        assert client.get("/").text == "inner /"
        assert client.post(f"{PATH}/connect").text == "inner /eventhandler/connect"
        assert post(client, "connect", connect_body(), hub="other").text.startswith("inner")

    def test_standalone_answers_404(self) -> None:
        app = validator(WebPubSubEventHandler("chat", path=PATH).as_wsgi())
        with serve_wsgi(app) as client:
            assert client.get("/").status_code == 404
            response = post(client, "connect", connect_body())
            assert response.status_code == 204
            assert "content-length" not in response.headers
