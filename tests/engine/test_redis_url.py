"""Sentinel URLs: parsed without I/O, refused with a message that says what is wrong."""

from __future__ import annotations

import pytest

from webpubsub.engine.redis import _safe_url
from webpubsub.engine.redis_url import SentinelURL, is_sentinel_url, parse_sentinel_url


def test_hosts_service_and_db() -> None:
    assert parse_sentinel_url("redis+sentinel://h1:26380,h2,10.0.0.3:5000/mymaster/2") == (
        SentinelURL(
            sentinels=(("h1", 26380), ("h2", 26379), ("10.0.0.3", 5000)),
            service_name="mymaster",
            db=2,
        )
    )


def test_db_defaults_to_zero_and_a_trailing_slash_is_fine() -> None:
    assert parse_sentinel_url("redis+sentinel://h/mymaster").db == 0
    assert parse_sentinel_url("redis+sentinel://h/mymaster/").db == 0


def test_credentials_for_redis_and_for_the_sentinels() -> None:
    url = parse_sentinel_url(
        "rediss+sentinel://app:p%40ss@h:1/svc/0?sentinel_password=s3&sentinel_username=sen"
    )
    assert (url.username, url.password) == ("app", "p@ss")
    assert (url.sentinel_username, url.sentinel_password) == ("sen", "s3")
    assert url.ssl
    assert parse_sentinel_url("redis+sentinel://:pw@h/svc").password == "pw"
    assert parse_sentinel_url("redis+sentinel://pw@h/svc").password == "pw"
    assert parse_sentinel_url("redis+sentinel://pw@h/svc").username is None
    assert not parse_sentinel_url("redis+sentinel://h/svc").ssl


def test_ipv6_sentinels() -> None:
    url = parse_sentinel_url("redis+sentinel://[::1]:26380,[fe80::1]/svc")
    assert url.sentinels == (("::1", 26380), ("fe80::1", 26379))


def test_scheme_detection() -> None:
    assert is_sentinel_url("redis+sentinel://h/svc")
    assert is_sentinel_url("REDISS+SENTINEL://h/svc")
    assert not is_sentinel_url("redis://h:6379/0")
    assert not is_sentinel_url("unix:///tmp/redis.sock")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h/svc", "starts with redis+sentinel://"),
        ("redis+sentinel://h:26379", "names the master's service"),
        ("redis+sentinel://h:26379/", "names the master's service"),
        ("redis+sentinel://h/svc/x", "database"),
        ("redis+sentinel://h/svc/0/1", "/service or /service/db"),
        ("redis+sentinel://h:port/svc", "bad sentinel port"),
        ("redis+sentinel://h:70000/svc", "bad sentinel port"),
        ("redis+sentinel://h1,,h2/svc", "host[:port]"),
        ("redis+sentinel:///svc", "host[:port]"),
        ("redis+sentinel://h/svc?password=x", "unknown Sentinel URL option"),
        ("redis+sentinel://[::1/svc", "bad sentinel"),
    ],
)
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("+", r"\+")):
        parse_sentinel_url(url)


def test_logged_urls_hide_every_password() -> None:
    assert _safe_url("redis+sentinel://:pw@h1,h2/svc/0?sentinel_password=s") == (
        "redis+sentinel://***@h1,h2/svc/0"
    )
    assert _safe_url("redis://:p@ss@h:6379/0") == "redis://***@h:6379/0"
    assert _safe_url("redis://h:6379/0") == "redis://h:6379/0"
