"""Socket.IO clients through webpubsub (Web PubSub for Socket.IO) against plain Socket.IO 4.8.

The same Socket.IO app (``bench/peers``): once holding its clients itself
(``socketio-server.js``, the Socket.IO peer of the main table), once handing them to
webpubsub with ``useAzureSocketIO`` (``socketio-azure.js``): N ``socket.io`` clients (the C
generator's Engine.IO/Socket.IO mode over WebSocket) connect, then the app broadcasts what
the publisher POSTs to it (``io.emit``), webpubsub fanning out in the second case. Reported
side by side with the ratio: handshakes/s (each one a ``connect`` round trip to the app
server over its tunnel, in the second case) and the steady and burst broadcasts, with the
delivery check of the other scenarios. Issue 18 item 6.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

from .run import (
    BUILD,
    BURST,
    GROUP_SIZE,
    PEERS,
    STEADY,
    Config,
    LoadGen,
    Measured,
    Server,
    _complete,
    _fmt,
    _median,
    free_port,
    log,
    server_env,
    summarize_runs,
    timed_connect,
    wait_for_quiet,
    warm_then_measure,
    write_inputs,
)

SUBJECTS = (("plain", "Socket.IO 4.8"), ("service", "Socket.IO via webpubsub"))
SCENARIOS = (("steady", STEADY), ("burst", BURST))
HUB = "bench"


class AppServer(Server):
    """The Socket.IO app that hands its clients to webpubsub (bench/peers/socketio-azure.js)."""

    def __init__(self, port: int, connection_string: str, cpu: int | None, logfile: Path):
        super().__init__("sioapp", port, "", cpu, logfile)
        self.connection_string = connection_string

    def command(self) -> tuple[list[str], str]:
        script = str(PEERS / "socketio-azure.js")
        return ["node", script, str(self.port), self.connection_string], "listening on"


class SioSubject(Measured):
    """One way of serving the Socket.IO app at one N: its processes and its N clients."""

    def __init__(self, kind: str, n: int, cfg: Config):
        self.kind = kind
        self.label = dict(SUBJECTS)[kind]
        self.n = n
        self.cfg = cfg
        self.groups = max(1, n // GROUP_SIZE)
        logs = cfg.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.gen_log = logs / f"sio-{kind}-{n}.loadgen.log"
        self.gen_log.write_text("")
        self.app_port = free_port()
        workdir = BUILD / f"sio-{kind}-{n}"
        # The app's publish requests and room paths are the Socket.IO peer's.
        self.inputs = write_inputs("socketio", self.app_port, "", self.groups, workdir)
        self.servers: list[Server] = []
        if kind == "plain":
            log_path = logs / f"sio-{kind}-{n}.server.log"
            log_path.write_text("")
            self.client_port = self.app_port
            self.measured = Server("socketio", self.app_port, "", cfg.server_cpu, log_path)
            self.servers = [self.measured]
        else:
            self.client_port = free_port()
            key = secrets.token_urlsafe(32)
            service_log = logs / f"sio-{kind}-{n}.service.log"
            app_log = logs / f"sio-{kind}-{n}.app.log"
            service_log.write_text("")
            app_log.write_text("")
            self.measured = Server(
                "webpubsub", self.client_port, key, cfg.server_cpu, service_log, server_env(cfg)
            )
            connection_string = (
                f"Endpoint=http://127.0.0.1;Port={self.client_port};AccessKey={key};Version=1.0;"
            )
            self.app = AppServer(self.app_port, connection_string, cfg.server_cpu, app_log)
            self.servers = [self.measured, self.app]
            paths = [
                f"/clients/socketio/hubs/{HUB}/?EIO=4&transport=websocket&room=g{g}"
                for g in range(self.groups)
            ]
            self.inputs.paths.write_text("\n".join(paths) + "\n")
        self.result: dict[str, Any] = {"clients": n, "groups": self.groups, "handshake": []}
        self.gen: LoadGen | None = None
        self.phase_id = 0

    def start(self) -> None:
        for server in self.servers:
            server.start()

    def open(self) -> None:
        self.gen = LoadGen(
            self.cfg.loadgen,
            port=self.client_port,
            clients=self.n,
            mode="sio",
            paths=self.inputs.paths,
            templates=self.inputs.templates,
            groups=self.groups,
            cpu=self.cfg.generator_cpu,
            logfile=self.gen_log,
            drain=self.cfg.drain,
            extra=["--pub-port", str(self.app_port)],
        )
        what = f"{self.label:<24} connect"
        c = timed_connect(self.gen, self.servers, what, self.n, timeout=180)
        self.result["handshake"].append(c)

    def stop(self) -> None:
        try:
            self.close_clients()
        finally:
            for server in reversed(self.servers):
                server.stop()


def measure(n: int, cfg: Config) -> dict[str, dict[str, Any]]:
    subjects = [SioSubject(kind, n, cfg) for kind, _ in SUBJECTS]
    log(f"  Socket.IO app, N = {n:,} clients: {', '.join(s.label for s in subjects)}")
    wait_for_quiet(cfg, f"Socket.IO N={n:,}")
    try:
        for s in subjects:
            s.start()
        time.sleep(cfg.settle / 2)
        for s in subjects:
            s.open()
        time.sleep(cfg.settle)
        warm_then_measure(subjects, SCENARIOS, cfg)
    finally:
        for s in subjects:
            s.stop()
    return {s.kind: s.result for s in subjects}


def run(cfg: Config) -> dict[str, Any]:
    """Every N of the run; {} when the peers cannot run (no node)."""
    if not (PEERS / "node_modules" / "@azure" / "web-pubsub-socket.io").exists():
        log("bench: skipping Socket.IO via webpubsub (bench/peers lacks its package)")
        return {}
    raw: dict[str, dict[str, Any]] = {kind: {} for kind, _ in SUBJECTS}
    for n in cfg.sizes:
        for kind, result in measure(n, cfg).items():
            raw[kind][str(n)] = result
    summary = {
        kind: {
            n: {
                **{name: summarize_runs(r[name]) for name, _ in SCENARIOS},
                "handshakes_per_s": _median([h["handshakes_per_s"] for h in r["handshake"]]),
                "handshake_failures": sum(h["failed"] for h in r["handshake"]),
            }
            for n, r in by_n.items()
        }
        for kind, by_n in raw.items()
    }
    return {"raw": raw, "summary": summary}


ROWS = (
    ("handshakes/s", "handshakes_per_s", ""),
    ("steady broadcast: deliveries/s", "steady.deliveries_per_s", ""),
    ("steady broadcast: p99 latency (ms)", "steady.p99_ms", "ms"),
    ("burst broadcast: deliveries/s", "burst.deliveries_per_s", ""),
    ("burst broadcast: p99 latency (ms)", "burst.p99_ms", "ms"),
)


def _get(summary: dict[str, Any] | None, path: str) -> float | None:
    node: Any = summary
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) else None


def markdown(results: dict[str, Any]) -> list[str]:
    summary = results.get("summary") or {}
    if not summary:
        return []
    sizes = sorted({int(n) for by_n in summary.values() for n in by_n})
    head = ["scenario"]
    for n in sizes:
        head += [f"Socket.IO 4.8 N={n:,}", f"via webpubsub N={n:,}", "via / plain"]
    lines = [
        "",
        "Socket.IO clients through webpubsub (`useAzureSocketIO`, the tunnel, webpubsub fanning"
        " out) against the same app on plain Socket.IO 4.8 (bench/socketio_service.py):",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for label, path, unit in ROWS:
        row = [label]
        for n in sizes:
            plain = _get(summary.get("plain", {}).get(str(n)), path)
            ours = _get(summary.get("service", {}).get(str(n)), path)
            ratio = ours / plain if ours is not None and plain else None
            row += [_fmt(plain, unit), _fmt(ours, unit), _fmt(ratio, "x")]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def problems(results: dict[str, Any]) -> list[str]:
    found = []
    for kind, by_n in (results.get("raw") or {}).items():
        for n, raw in by_n.items():
            for name, _ in SCENARIOS:
                if not all(_complete(r) for r in raw.get(name, [])):
                    found.append(f"Socket.IO {dict(SUBJECTS)[kind]} N={n} {name}")
            if any(h["failed"] for h in raw.get("handshake", [])):
                found.append(f"Socket.IO {dict(SUBJECTS)[kind]} N={n}: failed handshakes")
    return found
