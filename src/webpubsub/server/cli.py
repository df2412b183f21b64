"""``webpubsub``: the command line (``webpubsub serve``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import ssl
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from ..auth.tokens import mint_rest_token
from ..core.errors import ServiceUnavailable
from ..sdk import parse_connection_string
from .app import Service
from .config import LOG_LEVELS, ConfigError, Settings, load_settings
from .ops import LOG_FORMATS, RedactingFilter, make_formatter
from .workers import READY, Supervisor, WorkerIdentity, bind_to_parent, leave, reserve_port

log = logging.getLogger("webpubsub")

QUIET_LOGGERS = ("webpubsub.websocket", "httpx", "httpcore")
"""Loggers kept at WARNING unless ``--log-level debug``: per-request library chatter."""
LIVETRACE_URL_LIFETIME = 3600
"""Default seconds a ``webpubsub livetrace-url`` link stays valid."""
KEY_HINT = (
    "(AccessKey is the key you configured with --access-key, WEBPUBSUB_ACCESS_KEY or "
    "[keys] in the config file; it is not printed)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webpubsub",
        description="A self-hosted service wire-compatible with Azure Web PubSub.",
    )
    parser.add_argument("--version", action="version", version=f"webpubsub {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the service (REST API and client WebSocket endpoint on one port)",
        description="Run the service in memory on one port. Settings come from flags, then "
        "WEBPUBSUB_* environment variables, then the TOML config file.",
    )
    serve.add_argument("--host", help="interface to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 8080; 0 = any)")
    serve.add_argument(
        "--public-endpoint",
        help="the URL clients and SDKs use, e.g. https://pubsub.example.com behind a proxy "
        "(token audiences name it; default http://HOST:PORT)",
    )
    serve.add_argument("--access-key", help="primary access key (env WEBPUBSUB_ACCESS_KEY)")
    serve.add_argument("--secondary-key", help="secondary access key (env WEBPUBSUB_SECONDARY_KEY)")
    serve.add_argument("--config", help="TOML config file (env WEBPUBSUB_CONFIG)")
    serve.add_argument("--log-level", choices=LOG_LEVELS, help="default info")
    serve.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help="text (default) or json: one JSON object per line (env WEBPUBSUB_LOG_FORMAT)",
    )
    serve.add_argument(
        "--event-handler",
        metavar="URL_TEMPLATE",
        help="send every hub's events to this URL, e.g. http://localhost:3000/eventhandler/{event} "
        "(env WEBPUBSUB_EVENT_HANDLER; per-hub handlers go in the config file)",
    )
    serve.add_argument(
        "--redis",
        metavar="URL",
        help="join a cluster of nodes sharing this Redis server, e.g. redis://localhost:6379/0 "
        "(env WEBPUBSUB_REDIS_URL; rediss:// for TLS, password in the URL)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="worker processes sharing the port, each a node of the cluster (env "
        "WEBPUBSUB_WORKERS; default 1; above 1 needs --redis)",
    )
    serve.add_argument(
        "--certfile",
        help="serve HTTPS/WSS with this PEM certificate chain (needs --keyfile; env "
        "WEBPUBSUB_TLS_CERTFILE); without it the service speaks plain HTTP",
    )
    serve.add_argument(
        "--keyfile", help="the PEM private key of --certfile (env WEBPUBSUB_TLS_KEYFILE)"
    )
    serve.add_argument(
        "--allow-anonymous",
        action="store_true",
        default=None,
        help="let clients connect without an access token (env WEBPUBSUB_ALLOW_ANONYMOUS)",
    )
    _add_livetrace_url(commands)
    return parser


def _add_livetrace_url(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    livetrace = commands.add_parser(
        "livetrace-url",
        help="print a Live Trace URL that signs in with a short-lived token",
        description="Print <endpoint>/livetrace?access_token=<token>: a Live Trace sign-in "
        "link carrying an access-key JWT that expires, never the key itself. The endpoint and "
        "key come from --connection-string (env WEBPUBSUB_CONNECTION_STRING), else from the "
        "same flags, WEBPUBSUB_* variables and config file as 'serve'.",
    )
    livetrace.add_argument("--connection-string", help="Endpoint=...;AccessKey=...;")
    livetrace.add_argument("--access-key", help="the access key (env WEBPUBSUB_ACCESS_KEY)")
    livetrace.add_argument("--host", help="the service's host (default 127.0.0.1)")
    livetrace.add_argument("--port", type=int, help="the service's port (default 8080)")
    livetrace.add_argument("--public-endpoint", help="the service's public URL")
    livetrace.add_argument("--config", help="TOML config file (env WEBPUBSUB_CONFIG)")
    livetrace.add_argument(
        "--lifetime",
        type=int,
        default=LIVETRACE_URL_LIFETIME,
        help=f"seconds the link stays valid (default {LIVETRACE_URL_LIFETIME})",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "livetrace-url":
        return livetrace_url(args)

    def load() -> Settings:
        return load_settings(
            args.config,
            overrides={
                "host": args.host,
                "port": args.port,
                "public_endpoint": args.public_endpoint,
                "access_key": args.access_key,
                "secondary_key": args.secondary_key,
                "log_level": args.log_level,
                "event_handler": args.event_handler,
                "allow_anonymous": args.allow_anonymous,
                "redis_url": args.redis,
                "tls_certfile": args.certfile,
                "tls_keyfile": args.keyfile,
                "workers": args.workers,
            },
        )

    try:
        settings = load()
    except ConfigError as exc:
        print(f"webpubsub: {exc}", file=sys.stderr)
        return 2
    log_format = (args.log_format or os.environ.get("WEBPUBSUB_LOG_FORMAT") or "text").lower()
    if log_format not in LOG_FORMATS:
        print(f"webpubsub: log format must be one of {', '.join(LOG_FORMATS)}", file=sys.stderr)
        return 2
    redacting = configure_logging(settings.log_level, log_format)
    redacting.add_secrets(settings.access_keys)

    def reload() -> Settings:
        fresh = load()
        redacting.add_secrets(fresh.access_keys)
        return fresh

    worker = WorkerIdentity.from_env()
    if worker is not None and not bind_to_parent(worker):
        return 1  # the supervisor is gone already
    try:
        if worker is None and settings.worker_count > 1:
            return _supervise(args, settings)
        _run(settings, reload, worker)
    except ServiceUnavailable as exc:
        print(f"webpubsub: {exc.message}", file=sys.stderr)
        return 1
    except ssl.SSLError as exc:
        print(f"webpubsub: cannot use the TLS certificate or key: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"webpubsub: cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    return 0


def configure_logging(level: str, log_format: str = "text") -> RedactingFilter:
    """Log to stderr at ``level``, as text lines or (``json``) one JSON object per line.

    Every record passes a :class:`RedactingFilter` (returned, so the caller can add the
    access keys): secrets in URLs, connection strings and tracebacks never reach the log,
    whichever library logged them.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    redacting = RedactingFilter()
    handler.addFilter(redacting)
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    # The websockets library logs every open/close at INFO and httpx every event handler
    # request (URL included); keep that chatter for debug.
    library_level = logging.DEBUG if level == "debug" else logging.WARNING
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(library_level)
    return redacting


def _run(
    settings: Settings, load: Callable[[], Settings], worker: WorkerIdentity | None = None
) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        runner = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(_serve(settings, load, worker))


def _supervise(args: argparse.Namespace, settings: Settings) -> int:
    """``--workers N``: reserve the port, then run N worker processes on it."""
    reservation = reserve_port(settings.host, settings.port)
    try:
        settings.port = reservation.getsockname()[1]  # --port 0: one port for every worker
        supervisor = Supervisor(
            settings,
            worker_command(args, settings.port),
            settings.worker_count,
            lambda: _announce(settings),
        )
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(supervisor.run())
        return 0
    finally:
        reservation.close()


# serve's options that workers get as they were given (the port, as chosen, is added).
WORKER_OPTIONS = (
    ("host", "--host"),
    ("public_endpoint", "--public-endpoint"),
    ("access_key", "--access-key"),
    ("secondary_key", "--secondary-key"),
    ("config", "--config"),
    ("log_level", "--log-level"),
    ("log_format", "--log-format"),
    ("event_handler", "--event-handler"),
    ("redis", "--redis"),
    ("certfile", "--certfile"),
    ("keyfile", "--keyfile"),
)


def worker_command(args: argparse.Namespace, port: int) -> list[str]:
    """The command line of one worker: this ``serve``, on ``port``, as a single process."""
    command = [sys.executable, "-m", "webpubsub", "serve", "--port", str(port), "--workers", "1"]
    for name, flag in WORKER_OPTIONS:
        value = getattr(args, name)
        if value is not None:
            command.append(f"{flag}={value}")  # '=': a value may start with '-'
    if args.allow_anonymous:
        command.append("--allow-anonymous")
    return command


async def _serve(
    settings: Settings, load: Callable[[], Settings], worker: WorkerIdentity | None = None
) -> None:
    service = Service(settings, worker=worker)
    await service.start()
    _tune_gc()
    if worker is None:
        _announce(settings)
    else:
        sys.stdout.buffer.write(READY + b"\n")  # the supervisor announces, once
        sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def reload() -> None:
        try:
            service.reload(load())
        except ConfigError as exc:
            log.error("reload failed, keeping the current settings: %s", exc)

    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    log.info("shutting down: closing %d connection(s)", len(service.protocols))
    await service.stop()
    log.info("stopped")
    if worker is not None:
        leave(worker)


def _tune_gc() -> None:
    """Keep the cyclic GC off the hot paths of a long-running server process.

    Objects alive after start-up (modules, settings) are frozen out of collection, and the
    young generation is collected after 50,000 allocations instead of 700: with thousands of
    connections the default made the collector a large share of handshake time.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _announce(settings: Settings) -> None:
    """Say where the service listens and how to connect to it.

    A key the service generated is printed once, here: nobody else knows it. A key the
    operator configured is masked; they have it already, and stdout often ends up in logs.
    """
    print(f"webpubsub {__version__} listening on {settings.endpoint}", flush=True)
    if settings.generated_key:
        print(f"Connection string: {settings.connection_string}", flush=True)
        print(
            "(a random access key was generated; pass --access-key or set "
            "WEBPUBSUB_ACCESS_KEY to keep one)",
            flush=True,
        )
    else:
        print(f"Connection string: {masked_connection_string(settings)}", flush=True)
        print(KEY_HINT, flush=True)


def masked_connection_string(settings: Settings) -> str:
    """The connection string with ``AccessKey=***``: fill in the key you configured."""
    return f"Endpoint={settings.endpoint};AccessKey=***;Version=1.0;"


def livetrace_url(args: argparse.Namespace) -> int:
    """``webpubsub livetrace-url``: print a Live Trace link with a short-lived token."""
    if args.lifetime <= 0:
        print("webpubsub: --lifetime must be a positive number of seconds", file=sys.stderr)
        return 2
    connection_string = args.connection_string or os.environ.get("WEBPUBSUB_CONNECTION_STRING")
    try:
        if connection_string:
            parsed = parse_connection_string(connection_string)
            endpoint, key = parsed.endpoint, parsed.access_key
        else:
            settings = load_settings(
                args.config,
                overrides={
                    "host": args.host,
                    "port": args.port,
                    "public_endpoint": args.public_endpoint,
                    "access_key": args.access_key,
                },
            )
            if settings.generated_key:
                raise ConfigError(
                    "no access key: pass --access-key or --connection-string, or set "
                    "WEBPUBSUB_ACCESS_KEY or WEBPUBSUB_CONNECTION_STRING"
                )
            endpoint, key = settings.endpoint, settings.access_keys[0]
    except (ConfigError, ValueError) as exc:
        print(f"webpubsub: {exc}", file=sys.stderr)
        return 2
    token = mint_rest_token(key, f"{endpoint}/livetrace", lifetime_seconds=args.lifetime)
    print(f"{endpoint}/livetrace?access_token={token}")
    return 0
