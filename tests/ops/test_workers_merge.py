"""How ``/metrics`` merges the expositions of ``serve --workers N`` (``ops._workers``)."""

from __future__ import annotations

import os

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from webpubsub.server.config import ConfigError, load_settings
from webpubsub.server.ops import merge_expositions


def exposition(connections: int, sends: int, start: float, latency: float, up: int) -> bytes:
    registry = CollectorRegistry()
    Gauge("webpubsub_connections", "Open.", ["hub"], registry=registry).labels("chat").set(
        connections
    )
    Counter("webpubsub_sends", "Sends.", ["hub"], registry=registry).labels("chat").inc(sends)
    Gauge("process_start_time_seconds", "Start.", registry=registry).set(start)
    Gauge("webpubsub_cluster_redis_up", "Up.", registry=registry).set(up)
    Histogram("webpubsub_lat_seconds", "Lat.", buckets=(0.1, 1.0), registry=registry).observe(
        latency
    )
    return generate_latest(registry)


def samples(texts: list[bytes]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in merge_expositions(texts)
        for s in family.samples
    }


def test_sums_what_adds_up_and_keeps_the_rest_sensible() -> None:
    merged = samples([exposition(3, 5, 100.0, 0.05, 1), exposition(4, 2, 90.0, 0.5, 0)])
    assert merged[("webpubsub_connections", (("hub", "chat"),))] == 7
    assert merged[("webpubsub_sends_total", (("hub", "chat"),))] == 7
    assert merged[("process_start_time_seconds", ())] == 90.0  # the earliest
    assert merged[("webpubsub_cluster_redis_up", ())] == 0  # down if any worker lost Redis
    assert merged[("webpubsub_lat_seconds_bucket", (("le", "0.1"),))] == 1
    assert merged[("webpubsub_lat_seconds_bucket", (("le", "1.0"),))] == 2
    assert merged[("webpubsub_lat_seconds_count", ())] == 2
    created = [v for (name, _), v in merged.items() if name.endswith("_created")]
    assert created and all(v > 1e9 for v in created)  # the earliest, not a sum


def test_one_exposition_is_left_as_it_is() -> None:
    text = exposition(3, 5, 100.0, 0.05, 1)
    assert samples([text]) == samples([text, b""])


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WEBPUBSUB_WORKERS": "0"}, "at least 1"),
        ({"WEBPUBSUB_WORKERS": "two"}, "must be a number"),
        ({"WEBPUBSUB_WORKERS": "3"}, "needs --redis"),
    ],
)
def test_workers_setting_is_checked(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)


def test_workers_default_to_one_per_core_with_redis() -> None:
    assert load_settings(env={}).worker_count == 1
    clustered = load_settings(env={"WEBPUBSUB_REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert clustered.worker_count == (os.cpu_count() or 1)
    assert (
        load_settings(
            env={"WEBPUBSUB_REDIS_URL": "redis://x/0", "WEBPUBSUB_WORKERS": "3"}
        ).worker_count
        == 3
    )
