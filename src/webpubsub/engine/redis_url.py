"""Redis Sentinel URLs: which sentinels to ask, for which master, with which credentials.

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?options]
    rediss+sentinel://...   the same over TLS (to the sentinels and to Redis)

The sentinels' port defaults to 26379, the database to 0. ``user`` and ``password`` are
Redis's; the sentinels' own are the options ``sentinel_username`` and
``sentinel_password``. Pure: no I/O, no Redis import (the configuration checks URLs with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

SCHEMES = ("redis+sentinel", "rediss+sentinel")
DEFAULT_SENTINEL_PORT = 26379
OPTIONS = ("sentinel_username", "sentinel_password")


@dataclass(frozen=True, slots=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    ssl: bool = False


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SCHEMES


def parse_sentinel_url(url: str) -> SentinelURL:
    """Parse a ``redis+sentinel://`` URL; ValueError says what is wrong with it."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ValueError("a Sentinel URL starts with redis+sentinel:// or rediss+sentinel://")
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    authority, _, path = rest.partition("/")
    username = password = None
    if "@" in authority:
        userinfo, _, authority = authority.rpartition("@")
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
        if not has_password:  # redis://secret@host: the userinfo is the password
            username, password = None, unquote(user) or None
    sentinels = tuple(_host_port(part) for part in authority.split(","))
    parts = [unquote(p) for p in path.split("/")] if path else []
    if parts and parts[-1] == "":
        parts.pop()
    if not parts or not parts[0]:
        raise ValueError(
            "a Sentinel URL names the master's service after the hosts, "
            "e.g. redis+sentinel://host:26379/mymaster/0"
        )
    if len(parts) > 2:
        raise ValueError("a Sentinel URL's path is /service or /service/db")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise ValueError(f"the database in a Sentinel URL is a number, not {parts[1]!r}")
        db = int(parts[1])
    options: dict[str, str] = {}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        if key not in OPTIONS:
            raise ValueError(f"unknown Sentinel URL option {key!r} (known: {', '.join(OPTIONS)})")
        options[key] = values[-1]
    return SentinelURL(
        sentinels=sentinels,
        service_name=parts[0],
        db=db,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
        ssl=scheme.lower() == "rediss+sentinel",
    )


def _host_port(part: str) -> tuple[str, int]:
    part = part.strip()
    if part.startswith("["):  # [IPv6]:port
        host, bracket, tail = part[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(f"bad sentinel address {part!r}")
        port_text = tail[1:]
    else:
        host, _, port_text = part.partition(":")
    if not host:
        raise ValueError("a Sentinel URL lists host[:port] of each sentinel, comma-separated")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad sentinel port in {part!r}")
    return host, int(port_text)
