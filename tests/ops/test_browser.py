"""The Live Trace page in a real headless Chromium (Debian ``chromium``, driven by Playwright).

The test signs in with the access key (checking that the key itself never crosses the wire:
the page signs a short-lived token with it), makes traffic of every kind (connections, group and
server messages, REST calls, event handler calls), checks the page shows it live, exercises
the filters, pause/resume and the JSON download, and saves a screenshot to
``artifacts/livetrace.png``. It is skipped, saying why, when Chromium or Playwright is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

import webpubsub
from tests.ops.helpers import TIMEOUT, scrape, wait_for_metric
from tests.upstream_app import UpstreamApp
from webpubsub.core.events import EventHandlerSettings, HubSettings
from webpubsub.server.config import Settings
from webpubsub.testing import ServiceThread

CHROMIUM = os.environ.get("WEBPUBSUB_CHROMIUM") or shutil.which("chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
KEY = "browser-test-key-0123456789abcdefghijklmnop"
INSECURE_HOST = "livetrace.test"
"""A name for 127.0.0.1 that is not a secure context: no crypto.subtle there."""
HUB = "shop"
JSON = "json.webpubsub.azure.v1"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--host-resolver-rules=MAP {INSECURE_HOST} 127.0.0.1",
]

if CHROMIUM is None:
    pytest.skip(
        "Chromium is not installed (apt-get install chromium, or set WEBPUBSUB_CHROMIUM)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser test needs playwright (pip install playwright)"
)
Page = Any  # playwright.sync_api.Page


@pytest.fixture(scope="module")
def app() -> Iterator[UpstreamApp]:
    with UpstreamApp() as running:
        yield running


@pytest.fixture(scope="module")
def served(app: UpstreamApp) -> Iterator[ServiceThread]:
    """A service whose ``shop`` hub sends every event to a recording event handler."""
    hubs = {HUB: HubSettings((EventHandlerSettings(app.url_template),))}
    with ServiceThread(Settings(port=0, access_keys=[KEY], hubs=hubs)) as service:
        yield service


@pytest.fixture(scope="module")
def errors() -> list[str]:
    """What the page reported as errors (tests clear the ones they cause on purpose)."""
    return []


@pytest.fixture(scope="module")
def sent() -> list[str]:
    """Everything the browser sent: each request's URL, headers and body."""
    return []


def record_requests(page: Page, sent: list[str]) -> None:
    def record(request: Any) -> None:
        sent.append(f"{request.url}\n{request.headers}\n{request.post_data or ''}")

    page.on("request", record)


@pytest.fixture(scope="module")
def page(served: ServiceThread, errors: list[str], sent: list[str]) -> Iterator[Page]:
    with sync_api.sync_playwright() as playwright:
        # launch() gives every run a fresh temporary profile (--user-data-dir).
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS
        )
        context = browser.new_context(
            viewport={"width": 1440, "height": 900}, accept_downloads=True
        )
        page = context.new_page()
        page.set_default_timeout(TIMEOUT * 1000)
        record_requests(page, sent)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        try:
            yield page
        finally:
            context.close()
            browser.close()
        assert errors == [], f"the page logged errors: {errors}"
    # Nobody watches any more: the trace stops observing the node.
    wait_for_metric(served, lambda m: m.value("webpubsub_livetrace_observing") == 0)


def rest(served: ServiceThread) -> webpubsub.WebPubSubServiceClient:
    return webpubsub.WebPubSubServiceClient.from_connection_string(
        served.connection_string, hub=HUB
    )


@contextlib.contextmanager
def shopper(served: ServiceThread, user: str, roles: list[str]) -> Iterator[ClientConnection]:
    url = rest(served).get_client_access_token(user_id=user, roles=roles)["url"]
    with connect(url, subprotocols=[JSON]) as ws:  # type: ignore[list-item]
        assert json.loads(ws.recv(timeout=TIMEOUT))["event"] == "connected"
        yield ws


def request(ws: ClientConnection, message: dict[str, Any]) -> None:
    """Send a request with an ackId and wait for its ack."""
    ws.send(json.dumps(message))
    while json.loads(ws.recv(timeout=TIMEOUT)).get("type") != "ack":
        pass


def traffic(served: ServiceThread) -> None:
    """A little of everything the trace shows."""
    talk = ["webpubsub.joinLeaveGroup", "webpubsub.sendToGroup"]
    with shopper(served, "alice", talk) as alice, shopper(served, "bob", talk) as bob:
        request(alice, {"type": "joinGroup", "group": "deals", "ackId": 1})
        request(bob, {"type": "joinGroup", "group": "deals", "ackId": 1})
        request(
            alice,
            {
                "type": "sendToGroup",
                "group": "deals",
                "data": {"item": "lamp", "price": 25},
                "dataType": "json",
                "ackId": 2,
            },
        )
        request(alice, {"type": "event", "event": "checkout", "data": "cart-7", "ackId": 3})
        client = rest(served)
        client.send_to_all("Store closes in 10 minutes", content_type="text/plain")
        client.send_to_user("bob", b"\x01\x02\x03", content_type="application/octet-stream")
        client.group("deals").send_to_all({"flash": True})
        client.connection_exists("no-such-connection")
        client.close_all_connections(reason="end of test")
        for ws in (alice, bob):
            with contextlib.suppress(ConnectionClosed):
                while True:
                    ws.recv(timeout=TIMEOUT)


def rows(page: Page) -> list[str]:
    return [text for text in page.locator("#rows tr").all_inner_texts()]


def wait_rows(page: Page, check: Callable[[list[str]], bool]) -> list[str]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        seen = rows(page)
        if check(seen):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"rows never matched; last rows: {seen[:20]}")
        page.wait_for_timeout(20)  # a polling interval inside the browser, not a fixed wait


def contains(*words: str) -> Callable[[list[str]], bool]:
    return lambda seen: all(any(word in row for row in seen) for word in words)


def check_fallback_hmac(page: Page) -> None:
    """The page's pure-JS HMAC-SHA256 (for plain-http hosts) gives the standard answers."""
    for key, message in [("key", ""), (KEY, "a.b"), ("k" * 100, "x" * 200), ("é", "ü" * 64)]:
        ours = page.evaluate(
            "([k, m]) => Array.from(window.liveTraceLogin.hmacSha256Fallback("
            "new TextEncoder().encode(k), new TextEncoder().encode(m)))",
            [key, message],
        )
        expected = hmac.new(key.encode(), message.encode(), hashlib.sha256).digest()
        assert bytes(ours) == expected, (key, message)


class TestLiveTracePage:
    def test_sign_in(
        self, page: Page, served: ServiceThread, errors: list[str], sent: list[str]
    ) -> None:
        page.goto(f"{served.endpoint}/livetrace")
        page.fill("#credential", "not-the-key")
        page.click("button[type=submit]")
        assert "not valid" in page.inner_text(".error")
        assert errors == [
            "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
        ]
        errors.clear()
        page.fill("#credential", KEY)
        page.click("button[type=submit]")
        page.wait_for_selector("#status.live")
        assert page.inner_text("#status-text") == "Live"
        assert scrape(served).value("webpubsub_livetrace_viewers") == 1
        # Item 14: the key never crossed the wire; a token signed with it did.
        posted = [r for r in sent if r.split("\n", 1)[0].endswith("/livetrace/login")]
        assert len(posted) == 2 and all("credential=eyJ" in r for r in posted)
        assert not any(KEY in r or "not-the-key" in r for r in sent)

    def test_live_traffic_and_screenshot(self, page: Page, served: ServiceThread) -> None:
        traffic(served)
        seen = wait_rows(
            page,
            contains(
                "ConnectionStarted",
                "ConnectionEnded",
                "MessageReceived",
                "MessageSent",
                "HttpRequest",
                "EventHandlerCall",
                "CloseConnections",
            ),
        )
        assert any("alice" in row and "sendToGroup" in row for row in seen)
        assert any("WebPubSub_SendToAll" in row and "202" in row for row in seen)
        assert any("404" in row for row in seen)
        assert any("checkout" in row for row in seen)
        assert int(page.inner_text("#stat-open")) == 2
        assert int(page.inner_text("#stat-out")) >= 5
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "livetrace.png"), animations="disabled")

    def test_filters(self, page: Page) -> None:
        everything = len(rows(page))
        page.fill("#f-user", "alice")
        only_alice = wait_rows(page, lambda seen: 0 < len(seen) < everything)
        assert all("alice" in row for row in only_alice)
        page.fill("#f-user", "")
        wait_rows(page, lambda seen: len(seen) == everything)

        page.click("#categories button[data-category=HttpRequestLogs]")
        no_http = wait_rows(page, lambda seen: len(seen) < everything)
        assert not any("HttpRequest" in row for row in no_http)
        page.click("#categories button[data-category=HttpRequestLogs]")
        wait_rows(page, lambda seen: len(seen) == everything)

        page.fill("#f-text", "checkout")
        searched = wait_rows(page, lambda seen: 0 < len(seen) < everything)
        assert all("checkout" in row for row in searched)
        page.fill("#f-text", "")
        wait_rows(page, lambda seen: len(seen) == everything)

    def test_payload_preview(self, page: Page, served: ServiceThread) -> None:
        page.check("#f-preview")
        page.wait_for_selector("#status.live")
        with shopper(served, "carol", []):
            rest(served).send_to_all("Last call for the lamp deal", content_type="text/plain")
            wait_rows(page, contains("Last call for the lamp deal"))
        page.uncheck("#f-preview")
        page.wait_for_selector("#status.live")

    def test_pause_and_resume(self, page: Page, served: ServiceThread) -> None:
        page.click("#pause")
        assert page.inner_text("#status-text") == "Paused"
        # Paused means disconnected: the service stops tracing for this page.
        wait_for_metric(served, lambda m: m.value("webpubsub_livetrace_viewers") == 0)
        before = len(rows(page))
        rest(served).connection_exists("while-paused")
        assert len(rows(page)) == before
        page.click("#pause")
        page.wait_for_selector("#status.live")
        rest(served).connection_exists("after-resume")
        wait_rows(page, lambda seen: len(seen) > before)

    def test_sign_in_on_plain_http_without_webcrypto(
        self, page: Page, served: ServiceThread, sent: list[str]
    ) -> None:
        """On http://<a LAN name> the browser has no crypto.subtle: the fallback signs."""
        other = page.context.new_page()
        record_requests(other, sent)
        try:
            other.goto(f"http://{INSECURE_HOST}:{served.settings.port}/livetrace")
            assert other.evaluate("window.isSecureContext") is False
            assert other.evaluate("typeof crypto.subtle") == "undefined"
            check_fallback_hmac(other)
            other.fill("#credential", KEY)
            other.click("button[type=submit]")
            other.wait_for_selector("#status.live")
        finally:
            other.close()
        assert any(f"http://{INSECURE_HOST}" in r and "credential=eyJ" in r for r in sent)
        assert not any(KEY in r for r in sent)

    def test_download(self, page: Page, tmp_path: Path) -> None:
        with page.expect_download() as download:
            page.click("#download")
        target = tmp_path / "trace.json"
        download.value.save_as(target)
        records = json.loads(target.read_text())
        names = {record["operationName"] for record in records}
        assert {"ConnectionStarted", "MessageSent", "HttpRequest", "EventHandlerCall"} <= names
        assert all("time" in record and "category" in record for record in records)
