"""Refusals of ``invokeEvent`` as the official ``@azure/web-pubsub-client`` 1.1.0 sees them
(spec-next 1.6): every refusal is an ``invokeResponse`` with an error, never silence (the JS
client has no timeout of its own and would wait forever)."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import ACCESS_KEY
from tests.nodejs import JsError, NodeDriver
from tests.upstream_app import Reply, UpstreamApp
from webpubsub.auth.tokens import client_audience, client_url, mint_client_token
from webpubsub.core.events import EventHandlerSettings, HubSettings
from webpubsub.server.config import Limits, Settings
from webpubsub.testing import ServiceThread

from .test_js_sdk import Clients

pytestmark = pytest.mark.usefixtures("js_service")


def test_no_handler_then_throttled(clients: Clients, service: ServiceThread) -> None:
    node = service.service.node
    saved = (node.message_rate, node.message_burst)

    def set_rate(rate: float | None, burst: int) -> None:
        node.message_rate, node.message_burst = rate, burst

    service.call(lambda: set_rate(0.001, 1))  # one message, then one per 1,000 s
    try:
        clients.start("a", user_id="alice")
    finally:
        service.call(lambda: set_rate(*saved))
    missing = clients.error("a", "invokeEvent", "nobody", "x", "text")
    assert missing.error["errorDetail"]["name"] == "NotFound"
    throttled = clients.error("a", "invokeEvent", "nobody", "x", "text")
    detail = throttled.error["errorDetail"]
    assert detail["name"] == "Throttled" and "Too many messages" in detail["message"]


def test_a_slow_handler_times_out_and_the_connection_goes_on(hub: str) -> None:
    """Acceptance check 5: past the invoke timeout the JS client's call rejects with
    ``Timeout``; the connection stays open and the next call succeeds."""
    with UpstreamApp() as app:
        settings = Settings(
            port=0,
            access_keys=[ACCESS_KEY],
            limits=Limits(upstream_timeout=0.5),
            hubs={"*": HubSettings((EventHandlerSettings(app.url_template),))},
        )
        release = threading.Event()
        app.rules["slow"] = Reply(204, hold=release)
        app.rules["fast"] = Reply(200, b"ok", {"Content-Type": "text/plain"})
        driver = NodeDriver("client.mjs")
        try:
            with ServiceThread(settings) as own:
                token = mint_client_token(
                    ACCESS_KEY, client_audience(own.endpoint, hub), user_id="alice"
                )
                url = client_url(own.endpoint, hub) + f"?access_token={token}"
                driver.request("start", client="a", url=url, protocol="reliable")
                with pytest.raises(JsError) as timed_out:
                    driver.request("call", client="a", method="invokeEvent", args=["slow"])
                assert timed_out.value.error["errorDetail"]["name"] == "Timeout"
                result = driver.request("call", client="a", method="invokeEvent", args=["fast"])
                assert (result["dataType"], result["data"]) == ("text", "ok")
        finally:
            release.set()
            driver.close()


def test_concurrent_invocations_answer_out_of_order(hub: str) -> None:
    """Acceptance check 8: two invocations in flight, the second answered first: each call
    gets its own answer, and a joinGroup sent meanwhile is acknowledged before either."""
    with UpstreamApp() as app:
        settings = Settings(
            port=0,
            access_keys=[ACCESS_KEY],
            hubs={"*": HubSettings((EventHandlerSettings(app.url_template),))},
        )
        release_first, release_second = threading.Event(), threading.Event()
        app.rules["first"] = Reply(200, b"one", {"Content-Type": "text/plain"}, hold=release_first)
        app.rules["second"] = Reply(
            200, b"two", {"Content-Type": "text/plain"}, hold=release_second
        )
        driver = NodeDriver("client.mjs")
        results: dict[str, object] = {}

        def invoke(event: str) -> None:
            results[event] = driver.request("call", client="a", method="invokeEvent", args=[event])

        try:
            with ServiceThread(settings) as own:
                token = mint_client_token(
                    ACCESS_KEY,
                    client_audience(own.endpoint, hub),
                    user_id="alice",
                    roles=["webpubsub.joinLeaveGroup"],
                )
                url = client_url(own.endpoint, hub) + f"?access_token={token}"
                driver.request("start", client="a", url=url, protocol="reliable")
                calls = [threading.Thread(target=invoke, args=(e,)) for e in ("first", "second")]
                for call in calls:
                    call.start()
                app.wait_for(lambda seen: {r.event for r in seen} >= {"first", "second"})
                joined = driver.request("call", client="a", method="joinGroup", args=["g"])
                assert joined["isDuplicated"] is False
                assert results == {}  # both still pending when the join was acknowledged
                release_second.set()
                calls[1].join(10)
                assert "first" not in results
                release_first.set()
                calls[0].join(10)
                assert results["first"]["data"] == "one"  # type: ignore[index]
                assert results["second"]["data"] == "two"  # type: ignore[index]
        finally:
            release_first.set()
            release_second.set()
            driver.close()


def test_an_aborted_invocation_is_cancelled_and_its_id_free_again(hub: str) -> None:
    """Acceptance check 7: ``invokeEvent`` with an ``abortSignal`` aborted while the handler
    waits rejects at once (the client sends ``cancelInvocation``); the service forgets the
    call, so the same ``invocationId`` is accepted again and answered."""
    with UpstreamApp() as app:
        settings = Settings(
            port=0,
            access_keys=[ACCESS_KEY],
            hubs={"*": HubSettings((EventHandlerSettings(app.url_template),))},
        )
        release = threading.Event()
        app.rules["slow"] = Reply(200, b"late", {"Content-Type": "text/plain"}, hold=release)
        app.rules["fast"] = Reply(200, b"ok", {"Content-Type": "text/plain"})
        driver = NodeDriver("client.mjs")
        outcome: dict[str, object] = {}

        def invoke() -> None:
            try:
                driver.request(
                    "invokeAbortable",
                    client="a",
                    key="k",
                    args=["slow"],
                    options={"invocationId": "inv-1"},
                )
            except JsError as exc:
                outcome["error"] = exc.error

        try:
            with ServiceThread(settings) as own:
                token = mint_client_token(
                    ACCESS_KEY, client_audience(own.endpoint, hub), user_id="alice"
                )
                url = client_url(own.endpoint, hub) + f"?access_token={token}"
                driver.request("start", client="a", url=url, protocol="reliable")
                call = threading.Thread(target=invoke)
                call.start()
                app.wait_for(lambda seen: any(r.event == "slow" for r in seen))
                driver.request("abortInvocation", key="k")
                call.join(5)
                assert not call.is_alive(), "the aborted call did not reject"
                assert "error" in outcome
                again = driver.request(
                    "call",
                    client="a",
                    method="invokeEvent",
                    args=["fast", None, None, {"invocationId": "inv-1"}],
                )
                assert (again["invocationId"], again["data"]) == ("inv-1", "ok")
        finally:
            release.set()
            driver.close()
