"""The shared send flow, driven by hand (no sockets), and the pluggable transport seam."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import webpubsub
import webpubsub.aio
from webpubsub import AccessToken, RetryPolicy
from webpubsub.sdk._base import NEED_BEARER, Sleep

KEY = "flow-test-key-0123456789abcdefghijklmnopq"
CS = f"Endpoint=https://contoso.webpubsub.azure.com;AccessKey={KEY};Version=1.0;"
POLICY = RetryPolicy(max_retries=2, backoff_factor=1, jitter=0)


def req(step: object) -> httpx.Request:
    assert isinstance(step, httpx.Request), step
    return step


def finish(flow: Any, reply: Any) -> Any:
    with pytest.raises(StopIteration) as done:
        flow.send(reply)
    return done.value.value


def test_retry_steps() -> None:
    client = webpubsub.WebPubSubServiceClient.from_connection_string(CS, hub="chat", retry=POLICY)
    op = client._op_send_to_all({"a": 1}, None, None, None, None)
    flow = client._send_flow(op)
    first = req(next(flow))
    assert (
        first.url
        == "https://contoso.webpubsub.azure.com/api/hubs/chat/:send?api-version=2024-12-01"
    )
    assert flow.send(httpx.Response(503, request=first)) == Sleep(1.0)
    second = req(flow.send(None))
    assert second.headers["x-ms-client-request-id"] != first.headers["x-ms-client-request-id"]
    assert flow.send(httpx.Response(429, headers={"Retry-After": "7"}, request=second)) == Sleep(7)
    third = req(flow.send(None))
    raw = finish(flow, httpx.Response(503, request=third))  # retries exhausted: final answer
    assert raw.status_code == 503
    with pytest.raises(webpubsub.HttpResponseError):
        client._result(op, raw)
    client.close()


def test_transport_errors_are_translated() -> None:
    client = webpubsub.WebPubSubServiceClient.from_connection_string(CS, hub="chat", retry=False)
    flow = client._send_flow(client._op_exists("users", "u"))
    request = req(next(flow))
    with pytest.raises(webpubsub.ServiceRequestError) as info:
        flow.send(httpx.ConnectError("refused", request=request))
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    flow = client._send_flow(client._op_exists("users", "u"))
    request = req(next(flow))
    with pytest.raises(webpubsub.ServiceResponseError):
        flow.send(httpx.ReadTimeout("slow", request=request))
    client.close()


def test_token_credential_step() -> None:
    class Credential:
        def get_token(self, *scopes: str) -> AccessToken:
            raise AssertionError("the flow asks its driver, it never calls the credential")

    client = webpubsub.WebPubSubServiceClient(
        "https://contoso.webpubsub.azure.com", Credential(), hub="chat"
    )
    flow = client._send_flow(client._op_exists("groups", "g"))
    assert next(flow) is NEED_BEARER
    request = req(flow.send("Bearer entra"))
    assert request.headers["authorization"] == "Bearer entra"
    assert finish(flow, httpx.Response(404, request=request)).status_code == 404
    client.close()


def test_mock_transport_sync() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200 if request.method == "HEAD" else 202)

    with webpubsub.WebPubSubServiceClient.from_connection_string(
        CS, hub="chat", transport=httpx.MockTransport(handler)
    ) as client:
        client.send_to_all("hi", content_type="text/plain")
        assert client.group_exists("g") is True
    assert [r.method for r in seen] == ["POST", "HEAD"]
    assert seen[0].content == b"hi"


async def test_mock_transport_async() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, headers={"x-ms-error-code": "Error.Connection.NotExisted"})

    async with webpubsub.aio.WebPubSubServiceClient.from_connection_string(
        CS, hub="chat", transport=httpx.MockTransport(handler)
    ) as client:
        with pytest.raises(webpubsub.ResourceNotFoundError) as info:
            await client.group("g").add_connection("c")
        assert info.value.error_code == "Error.Connection.NotExisted"
        assert await client.connection_exists("c") is False
