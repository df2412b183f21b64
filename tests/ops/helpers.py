"""Helpers of the operability tests: scraping /metrics, live trace logins and SSE streams."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ACCESS_KEY
from webpubsub.server.ops import LiveTracePages
from webpubsub.testing import ServiceThread

TIMEOUT = 5.0
"""Upper bound for one expected effect; tests never sleep for a fixed time."""

Labels = tuple[tuple[str, str], ...]


class Scrape:
    """One ``/metrics`` answer, parsed: samples by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                self.samples[key] = sample.value

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels (0 when absent)."""
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples whose labels include these."""
        wanted = set(labels.items())
        return sum(
            value
            for (sample, sample_labels), value in self.samples.items()
            if sample == name and wanted <= set(sample_labels)
        )


def scrape(service: ServiceThread) -> Scrape:
    response = httpx.get(f"{service.endpoint}/metrics", timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


def wait_for_metric(
    service: ServiceThread, check: Callable[[Scrape], bool], timeout: float = TIMEOUT
) -> Scrape:
    """Scrape until ``check`` holds (effects cross threads), or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = scrape(service)
        if check(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError("metric condition not met in time; last scrape:\n" + result.text)
        time.sleep(0.01)  # polling interval, not a wait for an effect


def livetrace_token(service: ServiceThread, key: str = ACCESS_KEY, **claims: Any) -> str:
    """An access-key JWT for the live trace (``aud`` = ``<endpoint>/livetrace``, spec 7)."""
    body = {"aud": f"{service.endpoint}/livetrace", "exp": int(time.time()) + 600}
    body.update(claims)
    return jwt.encode(body, key.encode(), algorithm="HS256")


def live_trace_pages(service: ServiceThread) -> LiveTracePages:
    """The Live Trace pages of a running service (to reach its sign-in throttle)."""
    page = service.service.pages["/livetrace/login"]
    owner = getattr(page, "__self__", None)
    assert isinstance(owner, LiveTracePages)
    return owner


@contextlib.contextmanager
def login(service: ServiceThread, credential: str | None = None) -> Iterator[httpx.Client]:
    """An HTTP client holding a live trace session cookie (signed in with a token)."""
    if credential is None:
        credential = livetrace_token(service)
    with httpx.Client(base_url=service.endpoint, timeout=TIMEOUT) as client:
        response = client.post("/livetrace/login", data={"credential": credential})
        assert response.status_code == 303, response.text
        assert "webpubsub_livetrace" in client.cookies
        yield client


@dataclass
class Event:
    """One server-sent event."""

    name: str
    data: Any


class EventStream:
    """Reads server-sent events from an open streaming response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.iter_lines()

    def events(self) -> Iterator[Event]:
        name, data = "message", ""
        for line in self._lines:
            if line == "":
                if data:
                    yield Event(name, json.loads(data))
                name, data = "message", ""
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()

    def next_event(self) -> Event:
        return next(self.events())

    def records_until(self, done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
        """Collect records until ``done(records)`` holds (the read timeout bounds the wait)."""
        records: list[dict[str, Any]] = []
        for event in self.events():
            if event.name == "records":
                records.extend(event.data)
                if done(records):
                    return records
        raise AssertionError(f"the stream ended; records so far: {records}")


def has(records: list[dict[str, Any]], **fields: Any) -> bool:
    return any(all(r.get(k) == v for k, v in fields.items()) for r in records)
