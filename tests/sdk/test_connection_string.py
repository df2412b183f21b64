"""Connection strings and endpoints (spec 2.2): every form the official SDKs accept."""

from __future__ import annotations

import pytest

from webpubsub import ConnectionStringError, parse_connection_string
from webpubsub.sdk._connection_string import normalize_endpoint

KEY = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefgh"


@pytest.mark.parametrize(
    ("text", "endpoint"),
    [
        (f"Endpoint=http://127.0.0.1:8080;AccessKey={KEY};Version=1.0;", "http://127.0.0.1:8080"),
        (f"Endpoint=http://127.0.0.1;Port=8080;AccessKey={KEY};Version=1.0;", "http://127.0.0.1:8080"),
        (f"Endpoint=http://127.0.0.1:8080/;AccessKey={KEY};Version=1.0;", "http://127.0.0.1:8080"),
        # Port replaces a port in Endpoint (JS/.NET); Python's "h:9999:8080" bug is not copied.
        (f"Endpoint=http://127.0.0.1:9999;Port=8080;AccessKey={KEY};Version=1.0;", "http://127.0.0.1:8080"),
        # No scheme means https (JS).
        (f"Endpoint=127.0.0.1;Port=8080;AccessKey={KEY};Version=1.0;", "https://127.0.0.1:8080"),
        (f"Endpoint=http://LOCALHOST;Port=8080;AccessKey={KEY};Version=1.0;", "http://LOCALHOST:8080"),
        (f"Endpoint=http://127.0.0.1:8080/prefix;AccessKey={KEY};Version=1.0;", "http://127.0.0.1:8080/prefix"),
        (f"Endpoint=https://contoso.webpubsub.azure.com;AccessKey={KEY};Version=1.0;", "https://contoso.webpubsub.azure.com"),
        (f"  endpoint = https://h ; ACCESSKEY={KEY} ; version=1.0 ", "https://h"),
        (f"AccessKey={KEY};Endpoint=http://[::1];Port=81", "http://[::1]:81"),
        (f"Version=1.0;AccessKey={KEY};Endpoint=HTTPS://h:443", "https://h:443"),
    ],
)  # fmt: skip
def test_forms(text: str, endpoint: str) -> None:
    parsed = parse_connection_string(text)
    assert parsed.endpoint == endpoint
    assert parsed.access_key == KEY
    assert KEY not in repr(parsed)


def test_key_may_contain_equals_signs() -> None:
    parsed = parse_connection_string("Endpoint=https://h;AccessKey=abc==;Version=1.0")
    assert parsed.access_key == "abc=="
    assert parsed.version == "1.0"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "lacks Endpoint and AccessKey"),
        ("Endpoint=https://h", "lacks AccessKey"),
        (f"AccessKey={KEY}", "lacks Endpoint"),
        (f"Endpoint=https://h;{KEY}", "segment 2 is not of the form Name=Value"),
        (f"Endpoint=https://h;AccessKey={KEY};=x", "not of the form"),
        (f"Endpoint=https://h;AccessKey={KEY};AccessKey={KEY}", "more than once"),
        (f"Endpoint=https://h;AccessKey={KEY};Port=http", "Invalid Port"),
        (f"Endpoint=https://h;AccessKey={KEY};Port=70000", "Invalid Port"),
        (f"Endpoint=ftp://h;AccessKey={KEY}", "http:// or https://"),
        (f"Endpoint=http://;AccessKey={KEY}", "no host"),
        (f"Endpoint=http://h:port;AccessKey={KEY}", "not a valid URL"),
    ],
)
def test_malformed(text: str, message: str) -> None:
    with pytest.raises(ConnectionStringError, match=message) as info:
        parse_connection_string(text)
    assert isinstance(info.value, ValueError)
    assert KEY not in str(info.value)


def test_entra_hint_when_only_the_key_is_missing() -> None:
    with pytest.raises(ConnectionStringError, match="token credential"):
        parse_connection_string("Endpoint=https://h;Version=1.0")


def test_not_a_string() -> None:
    with pytest.raises(ConnectionStringError):
        parse_connection_string(None)  # type: ignore[arg-type]


def test_normalize_endpoint() -> None:
    assert normalize_endpoint("https://h/a/b/?x=1#f") == "https://h/a/b"
    assert normalize_endpoint("h.example") == "https://h.example"
    assert normalize_endpoint("http://h:1", port=2) == "http://h:2"
    with pytest.raises(ValueError):
        normalize_endpoint("")
