"""Service settings: defaults, a TOML file, environment variables and flags, in that order.

Every setting has a safe default, so ``webpubsub serve`` needs no file at all.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..core.errors import BadRequest
from ..core.events import SYSTEM_EVENTS, EventHandlerSettings, HubSettings
from ..core.names import MAX_GROUP_NAME
from ..engine.redis_url import is_sentinel_url, parse_sentinel_url

LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_HUB = HubSettings()
MIB = 1024 * 1024


class ConfigError(Exception):
    """A setting that cannot be used; the CLI prints it and exits with status 2."""


@dataclass
class Limits:
    """Resource limits (each one a knob in ``[limits]`` of the config file)."""

    max_message_size: int = MIB  # spec 6: one message <= 1 MB (REST body and WebSocket message)
    max_body_size: int = MIB  # any REST request body (413 past it)
    max_url_length: int = 8192
    max_header_count: int = 100
    max_header_bytes: int = 32 * 1024
    request_timeout: float = 30.0  # seconds to receive one complete request (head and body)
    keep_alive_timeout: float = 75.0  # seconds an HTTP connection may idle between requests
    close_timeout: float = 5.0  # seconds to wait for the client's close frame
    max_write_buffer: int = 16 * MIB  # unsent bytes per connection before it is cut
    max_connections: int = 50_000  # TCP connections per node (clients and REST callers)
    max_connections_per_hub: int = 50_000  # client connections per hub on this node
    max_groups_per_connection: int = 1000
    max_group_name_length: int = MAX_GROUP_NAME  # spec 1.1; may only be lowered
    client_message_rate: float = 1000.0  # client messages per second per connection (average)
    client_message_burst: int = 2000  # ...and in one burst; then ack Throttled, later 1008
    keep_alive_interval: float = 20.0  # WebSocket pings (spec 4.9)
    idle_timeout: float = 60.0  # seconds of silence (not even a pong) before a client is cut
    shutdown_grace: float = 5.0  # seconds SIGTERM waits for clients and REST calls to finish
    recovery_window: float = 30.0  # seconds a dropped reliable connection waits (spec 4.7)
    upstream_timeout: float = 30.0  # seconds for one event handler call
    upstream_concurrency: int = 64  # event handler calls in flight per hub
    max_pending_events: int = 64  # user events one connection may have waiting upstream
    max_pending_event_bytes: int = 64 * MIB  # bytes of user events waiting upstream, per node
    max_connect_response_size: int = 64 * 1024  # bytes of a connect answer (else refused 500)
    tunnel_grace: float = 30.0  # seconds an app server's connections wait for its tunnel
    tunnel_status_interval: float = 30.0  # an idle tunnel gets a ServiceStatus this often
    max_tunnel_backlog: int = 16 * MIB  # bytes of REST requests queued on one tunnel


@dataclass
class Tls:
    """HTTPS and WSS on the service port (``[tls]`` in the config file, or the flags).

    The service serves plain HTTP unless both files are given; most deployments terminate
    TLS at a reverse proxy instead (see SECURITY.md).
    """

    certfile: str | None = None  # PEM certificate chain
    keyfile: str | None = None  # PEM private key

    @property
    def enabled(self) -> bool:
        return bool(self.certfile)


@dataclass
class Cluster:
    """Knobs of the Redis engine (``[cluster]`` in the config file)."""

    node_ttl: float = 6.0  # a node silent this long is dead; its connections vanish
    heartbeat_interval: float = 2.0  # also how often live nodes look for dead ones
    redis_timeout: float = 2.0  # seconds before a Redis call fails (REST answers 503)
    publish_timeout: float = 5.0  # a REST call waiting this long for Redis answers 503


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    public_endpoint: str | None = None
    access_keys: list[str] = field(default_factory=list)
    log_level: str = "info"
    limits: Limits = field(default_factory=Limits)
    redis_url: str | None = None  # a cluster of nodes over Redis when set
    cluster: Cluster = field(default_factory=Cluster)
    tls: Tls = field(default_factory=Tls)
    # Hub settings by lower-case hub name; "*" applies to every hub without its own entry.
    hubs: dict[str, HubSettings] = field(default_factory=dict)
    generated_key: bool = False
    # Worker processes on this machine sharing the port (None: see worker_count).
    workers: int | None = None

    def hub(self, key: str) -> HubSettings:
        """The settings of a hub (by its lower-case key)."""
        found = self.hubs.get(key) or self.hubs.get("*")
        return found if found is not None else DEFAULT_HUB

    @property
    def endpoint(self) -> str:
        """The URL SDKs and clients use: the public endpoint, or this host and port."""
        if self.public_endpoint:
            return self.public_endpoint.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        scheme = "https" if self.tls.enabled else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def connection_string(self) -> str:
        return f"Endpoint={self.endpoint};AccessKey={self.access_keys[0]};Version=1.0;"

    @property
    def worker_count(self) -> int:
        """How many worker processes ``serve`` starts: as set; else one per core with Redis
        (a reliable client recovers on whichever worker its reconnect lands on), one without.
        """
        if self.workers is not None:
            return self.workers
        return (os.cpu_count() or 1) if self.redis_url else 1

    def ensure_key(self) -> None:
        """Generate a random access key when none was configured."""
        if not self.access_keys:
            # Hex: safe to paste into a shell or after a flag (never starts with '-').
            self.access_keys = [secrets.token_hex(24)]
            self.generated_key = True


def load_settings(
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build settings from a TOML file, then ``WEBPUBSUB_*`` variables, then flag overrides."""
    env = os.environ if env is None else env
    settings = Settings()
    config_file = config_file or env.get("WEBPUBSUB_CONFIG")
    if config_file:
        _apply_file(settings, Path(config_file))
    _apply_env(settings, env)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set(settings, key, value)
    _validate(settings)
    settings.ensure_key()
    return settings


def _apply_file(settings: Settings, path: Path) -> None:
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    for key in ("host", "port", "public_endpoint", "log_level", "redis_url", "workers"):
        if key in data:
            _set(settings, key, data[key])
    cluster = data.get("cluster", {})
    known_cluster = {f.name for f in fields(Cluster)}
    for key, value in cluster.items():
        if key not in known_cluster:
            raise ConfigError(f"unknown [cluster] setting '{key}'")
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"[cluster] {key} must be a positive number")
        setattr(settings.cluster, key, float(value))
    tls = data.get("tls", {})
    if not isinstance(tls, dict) or set(tls) - {"certfile", "keyfile"}:
        raise ConfigError("[tls] must be a table with 'certfile' and 'keyfile'")
    for key, value in tls.items():
        _set(settings, f"tls_{key}", value)
    keys = data.get("keys", {})
    if not isinstance(keys, dict):
        raise ConfigError("[keys] must be a table with 'primary' and optionally 'secondary'")
    _set_keys(settings, keys.get("primary"), keys.get("secondary"))
    hubs = data.get("hubs", {})
    if not isinstance(hubs, dict):
        raise ConfigError("[hubs] must be a table of hub tables, e.g. [hubs.chat]")
    for name, table in hubs.items():
        settings.hubs[name.lower()] = _hub_settings(name, table)
    limits = data.get("limits", {})
    known = {f.name for f in fields(Limits)}
    for key, value in limits.items():
        if key not in known:
            raise ConfigError(f"unknown limit '{key}' (known: {', '.join(sorted(known))})")
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"limit '{key}' must be a positive number")
        setattr(settings.limits, key, value)


def _hub_settings(name: str, table: Any) -> HubSettings:
    if not isinstance(table, dict):
        raise ConfigError(f"[hubs.{name}] must be a table")
    unknown = set(table) - {"allow_anonymous", "event_handlers"}
    if unknown:
        raise ConfigError(f"[hubs.{name}]: unknown keys {', '.join(sorted(unknown))}")
    handlers = []
    for entry in table.get("event_handlers", []):
        if not isinstance(entry, dict) or "url_template" not in entry:
            raise ConfigError(f"[[hubs.{name}.event_handlers]] needs a url_template")
        auth = entry.get("auth_header")
        auth_header = None
        if auth is not None:
            header_name, _, value = str(auth).partition(":")
            if not header_name.strip() or not value.strip():
                raise ConfigError("auth_header must look like 'Name: value'")
            auth_header = (header_name.strip(), value.strip())
        presence = _presence_settings(name, entry.get("group_presence_events"))
        try:
            handlers.append(
                EventHandlerSettings(
                    url_template=str(entry["url_template"]),
                    user_event_pattern=str(entry.get("user_event_pattern", "*")),
                    system_events=tuple(entry.get("system_events", SYSTEM_EVENTS)),
                    auth_header=auth_header,
                    group_presence_events=presence[0],
                    group_filters=presence[1],
                )
            )
        except BadRequest as exc:
            raise ConfigError(f"[hubs.{name}]: {exc}") from None
    return HubSettings(tuple(handlers), bool(table.get("allow_anonymous", False)))


def _presence_settings(hub: str, table: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``group_presence_events = { event_names = [...], group_filters = [...] }`` (Azure's
    ``groupPresenceEvents``); absent: no presence events."""
    if table is None:
        return (), ()
    where = f"[[hubs.{hub}.event_handlers]] group_presence_events"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(table) - {"event_names", "group_filters"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    lists = []
    for key in ("event_names", "group_filters"):
        value = table.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}.{key} must be a list of strings")
        lists.append(tuple(value))
    return lists[0], lists[1]


def simple_hub_settings(event_handler: str | None, allow_anonymous: bool) -> HubSettings:
    """Settings for every hub from the ``--event-handler``/``--allow-anonymous`` flags."""
    handlers: tuple[EventHandlerSettings, ...] = ()
    if event_handler:
        try:
            handlers = (EventHandlerSettings(url_template=event_handler),)
        except BadRequest as exc:
            raise ConfigError(str(exc)) from None
    return HubSettings(handlers, allow_anonymous)


def _apply_env(settings: Settings, env: Mapping[str, str]) -> None:
    for key in ("host", "port", "public_endpoint", "log_level", "redis_url", "workers"):
        value = env.get(f"WEBPUBSUB_{key.upper()}")
        if value:
            _set(settings, key, value)
    _set_keys(settings, env.get("WEBPUBSUB_ACCESS_KEY"), env.get("WEBPUBSUB_SECONDARY_KEY"))
    for key in ("tls_certfile", "tls_keyfile"):
        value = env.get(f"WEBPUBSUB_{key.upper()}")
        if value:
            _set(settings, key, value)
    handler = env.get("WEBPUBSUB_EVENT_HANDLER")
    anonymous = env.get("WEBPUBSUB_ALLOW_ANONYMOUS", "").lower() in ("1", "true", "yes")
    if handler or anonymous:
        settings.hubs["*"] = simple_hub_settings(handler, anonymous)


def _set_keys(settings: Settings, primary: Any, secondary: Any) -> None:
    for value in (primary, secondary):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError("access keys must be non-empty strings")
    if primary:
        settings.access_keys = [primary, *settings.access_keys[1:2]]
    if secondary:
        if not settings.access_keys:
            raise ConfigError("a secondary access key needs a primary key")
        settings.access_keys = [settings.access_keys[0], secondary]


def _set(settings: Settings, key: str, value: Any) -> None:
    if key == "access_key":
        _set_keys(settings, value, None)
    elif key == "secondary_key":
        _set_keys(settings, None, value)
    elif key == "port":
        try:
            settings.port = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"port must be a number, not {value!r}") from None
    elif key == "workers":
        try:
            settings.workers = int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"workers must be a number, not {value!r}") from None
    elif key == "event_handler":
        current = settings.hubs.get("*", DEFAULT_HUB)
        settings.hubs["*"] = simple_hub_settings(value, current.allow_anonymous)
    elif key == "allow_anonymous":
        if value:
            current = settings.hubs.get("*", DEFAULT_HUB)
            settings.hubs["*"] = HubSettings(current.event_handlers, True)
    elif key == "log_level":
        settings.log_level = str(value).lower()
    elif key in ("tls_certfile", "tls_keyfile"):
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{key.replace('_', ' ')} must be a file path")
        setattr(settings.tls, key.removeprefix("tls_"), value)
    else:
        setattr(settings, key, value)


def _validate(settings: Settings) -> None:
    if not 0 <= settings.port <= 65535:
        raise ConfigError(f"port must be between 0 and 65535, not {settings.port}")
    if settings.log_level not in LOG_LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}")
    redis_url = settings.redis_url
    if settings.workers is not None and settings.workers < 1:
        raise ConfigError(f"workers must be at least 1, not {settings.workers}")
    if (settings.workers or 1) > 1 and not redis_url:
        raise ConfigError(
            f"--workers {settings.workers} needs --redis: without Redis each worker would be a "
            "separate in-memory service, and clients connected to one could not reach the "
            "others (add --redis URL, or use --workers 1)"
        )
    if redis_url and is_sentinel_url(redis_url):
        try:
            parse_sentinel_url(redis_url)
        except ValueError as exc:
            raise ConfigError(f"bad Redis Sentinel URL: {exc}") from None
    elif redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            "the Redis URL must start with redis://, rediss://, unix:// or redis+sentinel://"
        )
    endpoint = settings.public_endpoint
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise ConfigError("the public endpoint must start with http:// or https://")
    tls = settings.tls
    if bool(tls.certfile) != bool(tls.keyfile):
        raise ConfigError("TLS needs both a certificate file and a key file")
    for path in (tls.certfile, tls.keyfile):
        if path and not Path(path).is_file():
            raise ConfigError(f"TLS file not found: {path}")
    limits = settings.limits
    if limits.max_group_name_length > MAX_GROUP_NAME:
        raise ConfigError(f"max_group_name_length cannot exceed {MAX_GROUP_NAME} (spec 1.1)")
