"""The benchmark runner: webpubsub against Socket.IO 4.8 (and MQTT against Mosquitto), one run.

    python3 -m bench            # full run (3 runs per figure, median), about 7 minutes
    python3 -m bench --quick    # one run per figure, shorter phases (about a minute)

From a fresh clone it creates ``.venv`` (``pip install -e '.[bench]'``), builds the C load
generator (``bench/loadgen.c``) with the machine's gcc, installs the Socket.IO peer
(``npm ci`` in ``bench/peers``), then for each N:

* starts both servers side by side, pinned to core 0, with the generator on core 1
  (``taskset``), and runs every scenario on one and at once on the other, alternately;
* opens N WebSocket clients in groups of 100: handshakes/s, idle memory per connection;
* steady broadcast (one REST publish in flight), burst broadcast (windows of 16 pipelined
  publishes), group fan-out (100-member groups, windows of 64 publishes), a slow consumer
  (one client stops reading during a burst), client-to-group (10 senders per group, one
  message in flight each), a reconnect storm (every client reset at once under the steady
  broadcast, then reconnecting: seconds until all are back, the broadcast's p99 meanwhile);
* counts every delivery at the receivers and checks each client got each message addressed
  to it;

then the MQTT fan-out against Mosquitto (``bench/mqtt.py``; Debian's ``mosquitto`` package,
installed with apt-get when missing): N MQTT subscribers at QoS 0, steady and burst, with the
same delivery check (``--mqtt off`` skips it, ``--mqtt only`` runs just it).

Results: ``bench/results/results.json``, ``results.md`` and ``results.png``; ``--update-docs``
writes the tables into ``docs/benchmarks.md``. Only 127.0.0.1 is used; every phase, wait and
subprocess is bounded in time.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import os
import platform
import resource
import secrets
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BUILD = BENCH / ".build"
PEERS = BENCH / "peers"
VENV = ROOT / ".venv"
DOCS = ROOT / "docs" / "benchmarks.md"

HUB = "bench"
API_VERSION = "api-version=2024-12-01"
# 100 bytes: the marker the generator overwrites ("@@" t_ns . sender . phase .), then padding.
PAYLOAD = b"@@" + b"0" * 20 + b"." + b"0" * 6 + b"." + b"0" * 4 + b"." + b"x" * 65
GROUP_SIZE = 100
C2G_SENDERS_PER_GROUP = 10
SERVERS = ("webpubsub", "socketio")
LABEL = {"webpubsub": "webpubsub", "socketio": "Socket.IO"}

# (publisher connections, requests per window, target): each connection sends a window of
# pipelined requests in one write and the next window when all of them are answered.
STEADY = (1, 1, "all")
BURST = (1, 16, "all")
GROUPS = (1, 64, "groups")
# Reconnect storm (issue 16): the steady broadcast runs; STORM_AT s in, every client is reset
# at once and reconnects; the phase lasts until all are back (at least STORM_AFTER s more).
STORM_AT = 1.0
STORM_AFTER = 4.0

DOCS_BEGIN = "<!-- bench:results:begin -->"
DOCS_END = "<!-- bench:results:end -->"


def log(message: str) -> None:
    print(message, flush=True)


def shown(path: Path) -> str:
    """A path relative to the repository when it is inside it."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# -- environment ----------------------------------------------------------------------------


def _in_venv() -> bool:
    return VENV.exists() and Path(sys.prefix).resolve() == VENV.resolve()


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def bootstrap(argv: list[str]) -> None:
    """Run inside ``.venv`` with webpubsub and the ``bench`` extra installed (fresh clone)."""
    python = VENV / "bin" / "python"
    if not _in_venv():
        if not python.exists():
            log("bench: creating .venv")
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
        os.chdir(ROOT)
        os.execv(str(python), [str(python), "-m", "bench", *argv])
    if not (VENV / "bin" / "webpubsub").exists() or not _has_matplotlib():
        log("bench: pip install -e '.[bench]' into .venv")
        proc = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-e", ".[bench]"],
            cwd=ROOT,
            timeout=600,
        )
        if proc.returncode != 0 and not (VENV / "bin" / "webpubsub").exists():
            raise SystemExit("bench: could not install webpubsub into .venv")


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (max(hard, 65536), hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            break
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        raise SystemExit(f"bench: ulimit -n is {soft}; {needed} file descriptors are needed")


def build_loadgen(name: str = "loadgen") -> Path:
    """Build bench/NAME.c with the machine's gcc (once, again when the source changes)."""
    source = BENCH / f"{name}.c"
    binary = BUILD / name
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        compiler = shutil.which("gcc") or shutil.which("cc")
        if compiler is None:
            raise SystemExit("bench: gcc is needed to build bench/loadgen.c")
        BUILD.mkdir(exist_ok=True)
        subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=True, timeout=120)
    return binary


def ensure_peers() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("bench: Node.js and npm are needed for the Socket.IO peer")
    installed = PEERS / "node_modules" / ".package-lock.json"
    lock = PEERS / "package-lock.json"
    if not installed.exists() or installed.stat().st_mtime < lock.stat().st_mtime:
        log("bench: npm ci in bench/peers")
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--silent"],
            cwd=PEERS,
            check=True,
            timeout=300,
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _first_line(cmd: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout
        return out.strip().splitlines()[0] if out.strip() else ""
    return ""


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = 0.0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = int(line.split()[1]) / 1024 / 1024
    versions: dict[str, str] = {}
    from importlib import metadata

    for package in ("webpubsub", "websockets", "uvloop", "httptools", "PyJWT"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    for package in ("socket.io", "engine.io", "ws"):
        with contextlib.suppress(OSError, ValueError):
            data = json.loads((PEERS / "node_modules" / package / "package.json").read_text())
            versions[package] = data["version"]
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": _first_line(["node", "--version"]),
        "gcc": _first_line(["gcc", "--version"]),
        "versions": versions,
    }


# -- tokens (HS256 with the standard library, as any SDK would sign them) ---------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwt_hs256(claims: dict[str, Any], key: str) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = hmac.new(key.encode("utf-8"), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


@dataclass
class Inputs:
    """Files the generator reads: client handshake paths (client i uses line i % groups) and
    HTTP publish requests (0: broadcast, 1 + g: group g)."""

    paths: Path
    paths_c2g: Path
    templates: Path


def write_inputs(kind: str, port: int, key: str, groups: int, workdir: Path) -> Inputs:
    base = f"http://127.0.0.1:{port}"
    now = int(time.time())
    exp = now + 3 * 3600
    if kind == "webpubsub":
        audience = f"{base}/client/hubs/{HUB}"

        def client_path(group: int, roles: list[str]) -> str:
            claims: dict[str, Any] = {
                "aud": audience,
                "iat": now,
                "exp": exp,
                "webpubsub.group": [f"g{group}"],
            }
            if roles:
                claims["role"] = roles
            return f"/client/hubs/{HUB}?access_token={jwt_hs256(claims, key)}"

        paths = [client_path(g, []) for g in range(groups)]
        paths_c2g = [client_path(g, ["webpubsub.sendToGroup"]) for g in range(groups)]
        urls = [f"/api/hubs/{HUB}/:send?{API_VERSION}"] + [
            f"/api/hubs/{HUB}/groups/g{g}/:send?{API_VERSION}" for g in range(groups)
        ]
        auth = [jwt_hs256({"aud": base + url, "iat": now, "exp": exp}, key) for url in urls]
    else:
        paths = [f"/socket.io/?EIO=4&transport=websocket&room=g{g}" for g in range(groups)]
        paths_c2g = paths
        urls = ["/publish"] + [f"/publish?room=g{g}" for g in range(groups)]
        auth = [""] * len(urls)
    workdir.mkdir(parents=True, exist_ok=True)
    inputs = Inputs(workdir / "paths.txt", workdir / "paths-c2g.txt", workdir / "requests.bin")
    inputs.paths.write_text("\n".join(paths) + "\n")
    inputs.paths_c2g.write_text("\n".join(paths_c2g) + "\n")
    with inputs.templates.open("wb") as f:
        for url, token in zip(urls, auth, strict=True):
            head = f"POST {url} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            if token:
                head += f"Authorization: Bearer {token}\r\n"
            head += f"Content-Type: text/plain\r\nContent-Length: {len(PAYLOAD)}\r\n\r\n"
            request = head.encode("ascii") + PAYLOAD
            f.write(f"{len(request)}\n".encode() + request + b"\n")
    return inputs


# -- processes ------------------------------------------------------------------------------


class LineReader:
    """Lines from a child's pipe with a deadline (select on the raw fd, our own buffer)."""

    def __init__(self, pipe: Any) -> None:
        self.fd = pipe.fileno()
        self.buffer = b""
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.fd, selectors.EVENT_READ)

    def readline(self, timeout: float) -> str | None:
        """The next line; None at end of file; TimeoutError past the deadline."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if not self.sel.select(timeout=left):
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def close(self) -> None:
        self.sel.close()


NICE = 0  # set by main(): a negative niceness for the measured processes, when allowed


def _pinned(cmd: list[str], cpu: int | None) -> list[str]:
    """Pinned to one core, and ahead of other processes on a shared machine (both servers
    and the generator alike)."""
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    if NICE:
        cmd = ["nice", "-n", str(NICE), *cmd]
    return cmd


def boost(pid: int) -> None:
    """Apply NICE to the process's scheduling autogroup too: with autogroups on (most
    desktop and VM kernels), a task's own niceness only counts inside its session."""
    if NICE:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/autogroup").write_text(str(NICE))


def can_renice(value: int) -> bool:
    if value >= 0 or shutil.which("nice") is None:
        return False
    proc = subprocess.run(["nice", "-n", str(value), "true"], capture_output=True, timeout=10)
    return proc.returncode == 0 and not proc.stderr


class Server:
    """One server process under test (pinned), with its RSS and CPU time from /proc."""

    def __init__(
        self,
        kind: str,
        port: int,
        key: str,
        cpu: int | None,
        logfile: Path,
        env: dict[str, str] | None = None,
    ):
        self.env = env
        self.kind = kind
        self.port = port
        self.key = key
        self.cpu = cpu
        self.logfile = logfile
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        cmd, ready = self.command()
        self._launch(cmd, ready, timeout)

    def command(self) -> tuple[list[str], str]:
        """The command line of this server, and what it prints once it listens."""
        if self.kind == "webpubsub":
            cmd = [
                str(VENV / "bin" / "webpubsub"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                f"--access-key={self.key}",  # a key may start with '-'
                "--log-level",
                "warning",
            ]
            ready = "Connection string:"
        elif self.kind == "hsfloor":
            floor = BENCH / "handshake_floor.py"
            cmd = [str(VENV / "bin" / "python"), str(floor), str(self.port), self.key]
            ready = "listening on"
        else:
            cmd = ["node", str(PEERS / "socketio-server.js"), str(self.port)]
            ready = "listening on"
        return cmd, ready

    def _launch(self, cmd: list[str], ready: str, timeout: float) -> None:
        err = self.logfile.open("a")
        self.proc = subprocess.Popen(
            _pinned(cmd, self.cpu),
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=self.env,
        )
        err.close()
        boost(self.proc.pid)
        reader = LineReader(self.proc.stdout)
        deadline = time.monotonic() + timeout
        try:
            while True:
                line = reader.readline(max(0.0, deadline - time.monotonic()))
                if line is None:
                    break
                if ready in line:
                    return
        except TimeoutError:
            pass
        finally:
            reader.close()
        self.stop()
        raise RuntimeError(f"{self.kind} did not start; see {self.logfile}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_idle(self, timeout: float = 10.0) -> None:
        """Until the server uses under 5% of a core over 0.2 s (at most ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cpu0 = self.cpu_seconds()
            time.sleep(0.2)
            if self.cpu_seconds() - cpu0 < 0.01:
                return

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class LoadGen:
    """The C generator, driven one command at a time (see bench/loadgen.c)."""

    def __init__(
        self,
        binary: Path,
        *,
        port: int,
        clients: int,
        mode: str,
        paths: Path,
        templates: Path | None,
        groups: int,
        cpu: int | None,
        logfile: Path,
        subprotocol: str = "",
        stall_index: int = -1,
        drain: float = 15.0,
        extra: list[str] | None = None,
    ):
        cmd = [
            str(binary),
            "--port",
            str(port),
            "--clients",
            str(clients),
            "--mode",
            mode,
            "--paths",
            str(paths),
            *(["--templates", str(templates)] if templates is not None else []),
            "--groups",
            str(groups),
            "--stall-index",
            str(stall_index),
            "--drain",
            str(drain),
            "--subprotocol",
            subprotocol,
            *(extra or []),
        ]
        err = logfile.open("a")
        self.proc = subprocess.Popen(
            _pinned(cmd, cpu),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        err.close()
        boost(self.proc.pid)
        self.logfile = logfile
        self.reader = LineReader(self.proc.stdout)
        self.read(10.0)

    def read(self, timeout: float) -> dict[str, Any]:
        try:
            line = self.reader.readline(timeout)
        except TimeoutError:
            raise RuntimeError(f"the load generator did not answer in {timeout:.0f} s") from None
        if line is None:
            raise RuntimeError(f"the load generator exited; see {self.logfile}")
        return dict(json.loads(line))

    def command(self, line: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.read(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, RuntimeError, ValueError):
                self.command("quit", 20.0)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.reader.close()


# -- one server at one N --------------------------------------------------------------------


@dataclass
class Config:
    sizes: list[int]
    servers: list[str]
    runs: int
    seconds: float
    settle: float
    handshake_runs: int
    drain: float
    server_cpu: int | None
    generator_cpu: int | None
    profile: bool
    out: Path
    quiet_wait: float = 15.0
    src: Path | None = None
    loadgen: Path = field(default=Path())
    floor: Path = field(default=Path())


def cpu_times() -> tuple[float, float]:
    """Busy CPU seconds of processes (user + nice + system) and steal, machine-wide."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system = (int(x) for x in fields[:3])
    steal = int(fields[7]) if len(fields) > 7 else 0
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system) / hz, steal / hz


def socket_queues(server_port: int, client_port: int) -> tuple[int | None, int | None]:
    """Bytes the kernel holds for one client: unsent on the server's socket (Send-Q) and
    unread on the client's (Recv-Q), from ``ss``."""
    if shutil.which("ss") is None:
        return None, None

    def column(sport: int, dport: int, index: int) -> int | None:
        with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError, IndexError):
            out = subprocess.run(
                [
                    "ss",
                    "-tnH",
                    "state",
                    "established",
                    f"( sport = :{sport} and dport = :{dport} )",
                ],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.split()
            return int(out[index])
        return None

    return column(server_port, client_port, 1), column(client_port, server_port, 0)


def wait_for_quiet(cfg: Config, label: str) -> float:
    """Wait until other processes use < 0.25 core, spending at most what is left of the run's
    budget (cfg.quiet_wait in all); returns the load seen last."""
    started = time.monotonic()
    deadline = started + cfg.quiet_wait
    try:
        return _wait_for_quiet(cfg, label, deadline)
    finally:
        cfg.quiet_wait = max(0.0, cfg.quiet_wait - (time.monotonic() - started))


def _wait_for_quiet(cfg: Config, label: str, deadline: float) -> float:
    waited = False
    while True:
        busy0, _ = cpu_times()
        time.sleep(0.5)
        busy1, _ = cpu_times()
        load = (busy1 - busy0) / 0.5
        if load < 0.25 or time.monotonic() >= deadline:
            if waited:
                log(
                    f"    (machine {'quiet' if load < 0.25 else 'still busy'}: "
                    f"{load:.2f} cores used by others)"
                )
            return round(load, 2)
        if not waited:
            log(
                f"    waiting up to {cfg.quiet_wait:.0f} s for other processes "
                f"({load:.2f} cores) before {label}"
            )
            waited = True


def _phase(
    gen: LoadGen,
    server: Server,
    label: str,
    name: str,
    phase_id: int,
    cfg: Config,
    shape: tuple[int, int, str],
    *,
    stall: bool = False,
    senders: int = 0,
    seconds: float | None = None,
    storm_at: float | None = None,
) -> dict[str, Any]:
    pubs, window, target = shape
    seconds = seconds or cfg.seconds
    cpu0 = server.cpu_seconds()
    busy0, steal0 = cpu_times()
    if storm_at is not None:
        line = f"storm {name} {phase_id} {seconds} {pubs} {window} {storm_at}"
    else:
        line = f"run {name} {phase_id} {seconds} {pubs} {window} {target} {int(stall)} {senders}"
    result = gen.command(line, timeout=seconds + cfg.drain + 90)
    busy1, steal1 = cpu_times()
    server_cpu = server.cpu_seconds() - cpu0
    stalled = result.get("stalled")
    if stalled and stalled.get("local_port"):
        server_q, client_q = socket_queues(server.port, stalled["local_port"])
        stalled["server_send_queue_bytes"] = server_q
        stalled["client_recv_queue_bytes"] = client_q
    wall = max(result["wall_seconds"], 1e-6)
    result["server_cpu_s"] = round(server_cpu, 3)
    result["server_util"] = round(server_cpu / wall, 3)
    result["generator_util"] = round(result["generator_cpu_s"] / wall, 3)
    # CPU that neither the server nor the generator used: other processes on the machine
    # (the figures are only comparable when this stays near zero), and VM steal time.
    other = (busy1 - busy0) - server_cpu - result["generator_cpu_s"]
    result["other_util"] = round(max(0.0, other) / wall, 3)
    result["steal_util"] = round((steal1 - steal0) / wall, 3)
    result["server_rss_kb"] = server.rss_kb()
    lat = result["latency_ms"]
    if result["failed_publishes"]:
        check = (
            f"FAILED: {result['failed_publishes']} publishes refused "
            f"(HTTP {result['first_bad_status']})"
        )
    elif result["expected"] == 0:
        check = "FAILED: nothing was published"
    elif result["missing"] or result["timed_out"] or result.get("extra"):
        check = f"INCOMPLETE: {result['missing']:,} missing, {result.get('extra', 0):,} extra"
    else:
        check = "all delivered"
    log(
        f"    {label:<9} {name:<7} {result['deliveries_per_s']:>10,.0f} deliveries/s  "
        f"p50 {lat['p50']:8.2f} ms  p99 {lat['p99']:8.2f} ms  "
        f"cpu server {result['server_util']:.2f} gen {result['generator_util']:.2f} "
        f"other {result['other_util']:.2f}  "
        f"[{result['deliveries']:,}/{result['expected']:,} {check}]"
    )
    storm = result.get("storm")
    if storm is not None:
        back = "TIMED OUT, " if storm["timed_out"] else ""
        log(
            f"    {label:<9} storm   {back}{storm['back']:,} clients back in "
            f"{storm['seconds']:.2f} s; broadcast meanwhile p50 "
            f"{storm['latency_ms']['p50']:.2f} ms p99 {storm['latency_ms']['p99']:.2f} ms"
        )
    return result


def _profile(server: Server, cfg: Config, label: str, seconds: int) -> subprocess.Popen[str] | None:
    spy = VENV / "bin" / "py-spy"
    if not spy.exists():
        log("    (py-spy not installed: pip install py-spy into .venv to profile)")
        return None
    out = cfg.out / "profiles" / f"{label}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            str(spy),
            "record",
            "--pid",
            str(server.pid),
            "--rate",
            "250",
            "--duration",
            str(seconds),
            "--format",
            "raw",
            "--native",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    time.sleep(0.7)  # attach before the load starts
    return proc


def _wait_profile(proc: subprocess.Popen[str] | None) -> None:
    if proc is None:
        return
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def server_env(cfg: Config) -> dict[str, str] | None:
    """The environment of webpubsub: with --src, that source tree comes first."""
    if cfg.src is None:
        return None
    env = dict(os.environ)
    env["PYTHONPATH"] = str(cfg.src)
    return env


def source_info(cfg: Config) -> dict[str, Any]:
    """Which webpubsub was measured: its source tree and a digest of its .py files."""
    root = cfg.src
    if root is None:
        proc = subprocess.run(
            [str(VENV / "bin" / "python"), "-c", "import webpubsub; print(webpubsub.__file__)"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        root = Path(proc.stdout.strip()).parent.parent if proc.returncode == 0 else None
    if root is None:
        return {}
    digest = hashlib.sha256()
    for path in sorted((root / "webpubsub").rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return {"src": shown(root), "sha256_of_py_files": digest.hexdigest()[:16]}


def check_server(cfg: Config) -> None:
    """Fail fast, with the reason, when webpubsub cannot even start."""
    proc = subprocess.run(
        [str(VENV / "bin" / "webpubsub"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        env=server_env(cfg),
    )
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise SystemExit(f"bench: webpubsub does not start:\n{tail}")


class Measured:
    """What every subject of a scenario shares: a generator of clients, and the server
    whose CPU its phases measure (``measured``)."""

    label: str
    cfg: Config
    gen: LoadGen | None
    phase_id: int
    measured: Server

    def phase(self, name: str, shape: tuple[int, int, str], **kwargs: Any) -> dict[str, Any]:
        assert self.gen is not None
        self.phase_id += 1
        return _phase(
            self.gen, self.measured, self.label, name, self.phase_id, self.cfg, shape, **kwargs
        )

    def close_clients(self) -> None:
        if self.gen is not None:
            self.gen.close()
            self.gen = None


def each(
    subjects: list[Any], name: str, shape: tuple[int, int, str], runs: int, **kwargs: Any
) -> None:
    """A scenario ``runs`` times, the subjects taking turns in each run so that a drifting
    machine affects them alike."""
    for s in subjects:
        s.result[name] = []
    for _ in range(runs):
        for s in subjects:
            s.result[name].append(s.phase(name, shape, **kwargs))


def warm_then_measure(
    subjects: list[Any], scenarios: tuple[tuple[str, tuple[int, int, str]], ...], cfg: Config
) -> None:
    """A warm-up burst (not recorded), then every scenario ``cfg.runs`` times."""
    for s in subjects:
        s.phase("warm-up", BURST, seconds=cfg.seconds / 2)
    for name, shape in scenarios:
        each(subjects, name, shape, cfg.runs)


class Subject(Measured):
    """One server under test at one N: its process, input files, clients and results."""

    def __init__(self, kind: str, n: int, cfg: Config):
        self.kind = kind
        self.label = LABEL[kind]
        self.n = n
        self.cfg = cfg
        self.groups = max(1, n // GROUP_SIZE)
        self.port = free_port()
        key = secrets.token_urlsafe(32)
        logs = cfg.out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        server_log = logs / f"{kind}-{n}.server.log"
        self.gen_log = logs / f"{kind}-{n}.loadgen.log"
        server_log.write_text("")
        self.gen_log.write_text("")
        self.inputs = write_inputs(kind, self.port, key, self.groups, BUILD / f"{kind}-{n}")
        self.mode = "wps" if kind == "webpubsub" else "sio"
        self.server = Server(kind, self.port, key, cfg.server_cpu, server_log, server_env(cfg))
        self.measured = self.server
        self.result: dict[str, Any] = {
            "clients": n,
            "groups": self.groups,
            "group_size": n // self.groups,
            "handshake": [],
        }
        self.gen: LoadGen | None = None
        self.phase_id = 0

    def open_clients(self, paths: Path, subprotocol: str = "", stall_index: int = -1) -> None:
        if self.gen is not None:
            self.close_clients()
            # The server tears the N old connections down after the generator quits; a
            # session started meanwhile would time that work too (the handshakes of webpubsub
            # fell from 7.6k/s to 5.2k/s, its core idle a quarter of the time, waiting).
            self.server.wait_idle()
        self.gen = LoadGen(
            self.cfg.loadgen,
            port=self.port,
            clients=self.n,
            mode=self.mode,
            paths=paths,
            templates=self.inputs.templates,
            groups=self.groups,
            cpu=self.cfg.generator_cpu,
            logfile=self.gen_log,
            subprotocol=subprotocol,
            stall_index=stall_index,
            drain=self.cfg.drain,
        )

    def connect(self) -> dict[str, Any]:
        assert self.gen is not None
        return timed_connect(self.gen, [self.server], f"{self.label:<9} connect", self.n)

    def stop(self) -> None:
        try:
            self.close_clients()
        finally:
            self.server.stop()


def timed_connect(
    gen: LoadGen, servers: list[Server], what: str, n: int, timeout: float = 90
) -> dict[str, Any]:
    """Connect the generator's N clients; the figures, with the servers' CPU meanwhile."""
    cpu0 = sum(server.cpu_seconds() for server in servers)
    c = gen.command("connect", timeout=timeout)
    cpu = sum(server.cpu_seconds() for server in servers) - cpu0
    c["server_util"] = round(cpu / max(c["seconds"], 1e-6), 3)
    failed = (
        f"  FAILED {c['failed']} (status {c['first_fail_status']}, errno {c['first_fail_errno']})"
        if c["failed"]
        else ""
    )
    log(
        f"    {what} {c['ready']:,}/{n:,} clients in {c['seconds']:.2f} s "
        f"({c['handshakes_per_s']:,.0f}/s, server cpu {c['server_util']:.2f}){failed}"
    )
    return c


def measure(n: int, cfg: Config) -> dict[str, dict[str, Any]]:
    """Every scenario for every server at N, the servers side by side, phases alternating.

    Both servers run at once (pinned to the same core; the one not under load waits idle),
    so each run of a scenario is measured on one server and then at once on the other: on a
    machine whose speed drifts (a shared VM), the ratios stay like for like.
    """
    subjects = [Subject(kind, n, cfg) for kind in cfg.servers]
    ours = next((s for s in subjects if s.kind == "webpubsub"), None)
    profiling = cfg.profile and ours is not None and n == max(cfg.sizes)
    groups = subjects[0].groups
    log(f"  N = {n:,} ({groups} groups of {n // groups}): {', '.join(s.label for s in subjects)}")
    others = wait_for_quiet(cfg, f"N={n:,}")

    def idle_all() -> None:
        # Both servers share core 0: a session timed while either is still tearing down the
        # N connections of the one before measures that teardown too (webpubsub's later
        # sessions ran at 0.8 of its core, 5.3k/s against 7k/s for the first).
        for s in subjects:
            s.server.wait_idle()

    try:
        for s in subjects:
            s.server.start()
            s.result["others_load_before"] = others
        time.sleep(cfg.settle / 2)
        baselines = {s.kind: s.server.rss_kb() for s in subjects}
        # Session 1: simple clients (bare payloads; Socket.IO: its clients) for the REST-driven
        # scenarios; client 0 is the one that stalls in the slow-consumer scenario.
        for s in subjects:
            s.open_clients(s.inputs.paths, stall_index=0)
            c = s.connect()
            s.result["handshake"].append(c)
            time.sleep(cfg.settle)
            rss = s.server.rss_kb()
            s.result["idle"] = {
                "baseline_rss_kb": baselines[s.kind],
                "rss_kb": rss,
                "kb_per_connection": round((rss - baselines[s.kind]) / max(1, c["ready"]), 2),
            }
            log(
                f"    {s.label:<9} idle    {s.result['idle']['kb_per_connection']:.2f} KB per "
                f"connection (RSS {baselines[s.kind] / 1024:.0f} -> {rss / 1024:.0f} MiB)"
            )
        # Warm-up, not recorded: V8 compiles Socket.IO's hot paths after some use, and both
        # servers get their caches and allocators warm.
        for s in subjects:
            s.phase("warm-up", BURST, seconds=cfg.seconds / 2)
        each(subjects, "steady", STEADY, cfg.runs)
        each(subjects, "burst", BURST, cfg.runs)
        # Right after the bursts it is compared with.
        each(subjects, "stall", BURST, cfg.runs, stall=True)
        each(subjects, "group", GROUPS, cfg.runs)
        # Last with these clients: they all drop and reconnect under the steady broadcast.
        storm_seconds = STORM_AT + max(cfg.seconds, STORM_AFTER)
        each(subjects, "storm", STEADY, 1, storm_at=STORM_AT, seconds=storm_seconds)
        if profiling and ours is not None:
            for name, shape in (("steady", STEADY), ("burst", BURST), ("group", GROUPS)):
                spy = _profile(ours.server, cfg, f"{name}-{n}", int(cfg.seconds) + 1)
                log("    (profiled with py-spy; not part of the figures)")
                ours.result[f"{name}_profiled"] = ours.phase(name, shape)
                _wait_profile(spy)
        for s in subjects:
            s.close_clients()
        # More handshake samples, on fresh sets of clients.
        if cfg.handshake_runs > 1:
            for s in subjects:
                s.open_clients(s.inputs.paths)
                idle_all()
                s.result["handshake"].append(s.connect())
                s.close_clients()
        if profiling and ours is not None:
            ours.open_clients(ours.inputs.paths)
            idle_all()
            spy = _profile(ours.server, cfg, f"handshake-{n}", 3)
            log("    (profiled with py-spy; not part of the figures)")
            ours.result["handshake_profiled"] = ours.connect()
            ours.close_clients()
            _wait_profile(spy)
        # Session 2: json.webpubsub.azure.v1 clients (Socket.IO: the same clients) that send
        # to their own group.
        for s in subjects:
            subprotocol = "json.webpubsub.azure.v1" if s.mode == "wps" else ""
            s.open_clients(s.inputs.paths_c2g, subprotocol=subprotocol)
            idle_all()
            c = s.connect()
            if cfg.handshake_runs > 2:
                s.result["handshake"].append(c)  # a third sample ("connected" message included)
        each(subjects, "c2g", (0, 1, "none"), cfg.runs, senders=C2G_SENDERS_PER_GROUP)
    finally:
        for s in subjects:
            s.stop()
    return {s.kind: s.result for s in subjects}


def measure_handshake_floor(n: int, cfg: Config) -> dict[str, Any]:
    """The same handshakes (same generator, same tokens) against bench/handshake_floor.py:
    uvloop, the token checked, the 101 written, nothing else."""
    port, key = free_port(), secrets.token_urlsafe(32)
    logs = cfg.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    server = Server("hsfloor", port, key, cfg.server_cpu, logs / f"hsfloor-{n}.server.log")
    groups = max(1, n // GROUP_SIZE)
    inputs = write_inputs("webpubsub", port, key, groups, BUILD / f"hsfloor-{n}")
    runs: list[dict[str, Any]] = []
    server.start()
    try:
        for _ in range(max(1, cfg.handshake_runs)):
            gen = LoadGen(
                cfg.loadgen,
                port=port,
                clients=n,
                mode="wps",
                paths=inputs.paths,
                templates=inputs.templates,
                groups=groups,
                cpu=cfg.generator_cpu,
                logfile=logs / f"hsfloor-{n}.loadgen.log",
                drain=cfg.drain,
            )
            try:
                runs.append(gen.command("connect", timeout=90))
            finally:
                gen.close()
    finally:
        server.stop()
    rate = _median([r["handshakes_per_s"] for r in runs])
    log(f"  handshake floor (uvloop, token checked), N = {n:,}: {rate:,.0f} handshakes/s")
    return {"handshakes_per_s": rate, "failed": sum(r["failed"] for r in runs), "runs": runs}


def measure_floor(n: int, cfg: Config) -> dict[str, Any]:
    """The kernel's fan-out ceiling on this machine: a C program that only write()s
    (bench/floor.c), one frame per write and 16 frames per write."""
    out: dict[str, Any] = {}
    rounds = max(2, 200_000 // n)
    for per in (1, 16):
        cmd = ["nice", "-n", str(NICE)] if NICE else []
        cmd += [str(cfg.floor), str(n), str(rounds), str(per)]
        cmd += [str(cfg.server_cpu if cfg.server_cpu is not None else -1)]
        cmd += [str(cfg.generator_cpu if cfg.generator_cpu is not None else -1)]
        try:
            with subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            ) as proc:
                boost(proc.pid)
                try:
                    stdout, _ = proc.communicate(timeout=120)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    raise
            out[f"frames_per_write_{per}"] = json.loads(stdout)
        except (subprocess.SubprocessError, ValueError) as exc:
            out[f"frames_per_write_{per}"] = {"error": str(exc)}
    one = out["frames_per_write_1"].get("frames_per_s")
    many = out["frames_per_write_16"].get("frames_per_s")
    if one and many:
        log(
            f"  C write() floor, N = {n:,}: {one:,.0f} frames/s at 1 frame per write, "
            f"{many:,.0f} at 16"
        )
    return out


# -- summary --------------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _complete(r: dict[str, Any]) -> bool:
    """Every message addressed was delivered, nothing refused, and something was sent."""
    return (
        r["missing"] == 0
        and r.get("extra", 0) == 0  # exactly what was addressed: no repeats either
        and not r["timed_out"]
        and r["failed_publishes"] == 0
        and r["expected"] > 0
    )


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "deliveries_per_s": _median([r["deliveries_per_s"] for r in runs]),
        "messages_per_s": _median([r["messages_per_s"] for r in runs]),
        "p50_ms": _median([r["latency_ms"]["p50"] for r in runs]),
        "p99_ms": _median([r["latency_ms"]["p99"] for r in runs]),
        "server_util": _median([r["server_util"] for r in runs]),
        "generator_util": _median([r["generator_util"] for r in runs]),
        "other_util": max(r["other_util"] for r in runs),
        "steal_util": max(r["steal_util"] for r in runs),
        # runs in which other processes (or the VM's host) took CPU from the server
        "deprived_runs": sum(
            1
            for r in runs
            if max(r["other_util"], r["steal_util"]) > 0.15 and r["server_util"] < 0.85
        ),
        "complete": all(_complete(r) for r in runs),
        "missing": sum(r["missing"] for r in runs),
        "extra": sum(r.get("extra", 0) for r in runs),
        "failed_publishes": sum(r["failed_publishes"] for r in runs),
        "runs": len(runs),
    }


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scenario in ("steady", "burst", "group", "c2g", "stall"):
        if scenario in raw:
            out[scenario] = summarize_runs(raw[scenario])
    if raw.get("storm"):
        storm = raw["storm"][-1]
        detail = storm.get("storm", {})
        out["storm"] = {
            "seconds": detail.get("seconds"),
            "back": detail.get("back"),
            "timed_out": detail.get("timed_out", True),
            "p99_ms": detail.get("latency_ms", {}).get("p99"),
            "p50_ms": detail.get("latency_ms", {}).get("p50"),
            # every client back got every broadcast published from then on; one published
            # just before its return may reach it too (an "extra", not a repeat)
            "complete": storm["missing"] == 0
            and not storm["timed_out"]
            and storm["failed_publishes"] == 0
            and storm["expected"] > 0
            and not detail.get("timed_out", True),
            "missing": storm["missing"],
        }
    out["handshakes_per_s"] = _median([h["handshakes_per_s"] for h in raw["handshake"]])
    out["handshake_failures"] = sum(h["failed"] for h in raw["handshake"])
    out["idle_kb_per_connection"] = raw["idle"]["kb_per_connection"]
    stall = raw["stall"][-1]
    out["stall_detail"] = {
        **stall.get("stalled", {}),
        "others_deliveries_per_s": out["stall"]["deliveries_per_s"],
        "others_vs_burst": round(
            out["stall"]["deliveries_per_s"] / out["burst"]["deliveries_per_s"], 3
        )
        if out["burst"]["deliveries_per_s"]
        else None,
        "others_complete": out["stall"]["complete"],
        "server_rss_kb": stall["server_rss_kb"],
    }
    return out


@dataclass
class Target:
    name: str
    value: float
    goal: float
    higher_is_better: bool
    unit: str

    @property
    def met(self) -> bool:
        return self.value >= self.goal if self.higher_is_better else self.value <= self.goal

    def verdict(self) -> str:
        if self.met:
            return "met"
        if self.higher_is_better:
            short = (self.goal - self.value) / self.goal * 100
            return f"MISSED by {short:.0f}% (x{self.goal / max(self.value, 1e-9):.2f} needed)"
        over = (self.value - self.goal) / self.goal * 100
        return f"MISSED by {over:.0f}% (x{self.value / self.goal:.2f} over)"


def targets(
    summary: dict[str, dict[str, Any]],
    sizes: list[int],
    floor: dict[str, Any] | None = None,
    handshake_floor: dict[str, Any] | None = None,
) -> list[Target]:
    """The targets of issue 16, each against a figure of the same run."""
    ours = summary.get("webpubsub", {})
    peer = summary.get("socketio", {})
    floor = floor or {}
    handshake_floor = handshake_floor or {}
    out: list[Target] = []
    for n in sizes:
        s = ours.get(str(n))
        if s is None:
            continue
        p = peer.get(str(n))
        out.append(Target(f"handshakes, N={n:,}", s["handshakes_per_s"], 6000, True, "/s"))
        if p is not None and p["handshakes_per_s"]:
            ratio = s["handshakes_per_s"] / p["handshakes_per_s"]
            out.append(Target(f"handshakes vs Socket.IO, N={n:,}", ratio, 3.0, True, "x"))
        many = floor.get(str(n), {}).get("frames_per_write_16", {}).get("frames_per_s")
        if many:
            ratio = s["burst"]["deliveries_per_s"] / many
            out.append(
                Target(f"burst vs 16-frames-per-write floor, N={n:,}", ratio, 0.5, True, "x")
            )
        if p is not None and p["steady"]["deliveries_per_s"]:
            ratio = s["steady"]["deliveries_per_s"] / p["steady"]["deliveries_per_s"]
            out.append(Target(f"steady broadcast vs Socket.IO, N={n:,}", ratio, 1.5, True, "x"))
    big = ours.get("10000")
    one = floor.get("10000", {}).get("frames_per_write_1", {}).get("frames_per_s")
    if big is not None and one:
        # The floor's time to write one frame to each of the N sockets.
        floor_ms = 1000 * 10_000 / one
        ratio = big["steady"]["p99_ms"] / floor_ms
        out.append(Target("steady p99 / floor fan-out time, N=10,000", ratio, 1.5, False, "x"))
    return out


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or value != value:  # NaN
        return "-"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "ms":
        return f"{value:,.1f}"
    if unit == "KB":
        return f"{value:,.2f}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.1f}"


ROWS: list[tuple[str, str, str, bool]] = [
    # (label, path in the summary, unit, higher is better)
    ("steady broadcast: deliveries/s", "steady.deliveries_per_s", "", True),
    ("steady broadcast: p50 latency (ms)", "steady.p50_ms", "ms", False),
    ("steady broadcast: p99 latency (ms)", "steady.p99_ms", "ms", False),
    ("burst broadcast: deliveries/s", "burst.deliveries_per_s", "", True),
    ("burst broadcast: p99 latency (ms)", "burst.p99_ms", "ms", False),
    ("group fan-out: deliveries/s", "group.deliveries_per_s", "", True),
    ("group fan-out: publishes/s", "group.messages_per_s", "", True),
    ("group fan-out: p99 latency (ms)", "group.p99_ms", "ms", False),
    ("client-to-group: deliveries/s", "c2g.deliveries_per_s", "", True),
    ("client-to-group: messages in/s", "c2g.messages_per_s", "", True),
    ("client-to-group: p99 latency (ms)", "c2g.p99_ms", "ms", False),
    ("slow consumer: others' deliveries/s", "stall.deliveries_per_s", "", True),
    ("slow consumer: others vs. burst", "stall_detail.others_vs_burst", "x", True),
    ("idle memory: KB per connection", "idle_kb_per_connection", "KB", False),
    ("handshakes/s", "handshakes_per_s", "", True),
    ("reconnect storm: s until all are back", "storm.seconds", "", False),
    ("reconnect storm: broadcast p99 meanwhile (ms)", "storm.p99_ms", "ms", False),
]


def _get(summary: dict[str, Any] | None, path: str) -> float | None:
    node: Any = summary
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) and node is not None else None


def markdown(results: dict[str, Any]) -> str:
    summary = results["summary"]
    sizes = results["config"]["sizes"]
    meta = results["meta"]
    m = meta["machine"]
    lines = [
        f"Run of {meta['date']} ({meta['mode']}: median of {results['config']['runs']} "
        f"run(s) of {results['config']['seconds']:g} s per figure; {meta['elapsed_s']:.0f} s "
        "in all).",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']:g} GiB, Linux "
        f"{m['kernel']}; Python {m['python']}, Node {m['node']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + f". {meta['pinning']}",
        "",
    ]
    source = meta.get("webpubsub_source") or {}
    if source:
        lines += [
            f"webpubsub measured from `{source['src']}` (sha256 of its .py files "
            f"{source['sha256_of_py_files']}).",
            "",
        ]
    header = ["scenario"]
    for n in sizes:
        header += [f"webpubsub N={n:,}", f"Socket.IO N={n:,}", "us/peer"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for label, path, unit, _higher in ROWS:
        row = [label]
        for n in sizes:
            cells = []
            values = []
            for kind in SERVERS:
                by_n = summary.get(kind, {}).get(str(n))
                value = _get(by_n, path)
                values.append(value)
                scenario = by_n.get(path.split(".")[0]) if by_n else None
                flag = (
                    " (!)" if isinstance(scenario, dict) and not scenario.get("complete", 1) else ""
                )
                cells.append(_fmt(value, unit) + (flag if value is not None else ""))
            ours, peer = values
            ratio = ours / peer if ours is not None and peer else None
            row += [*cells, _fmt(ratio, "x")]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(
        "us/peer: webpubsub divided by Socket.IO (above 1 is better for rates, below 1 for "
        "latency and memory). Deliveries are counted at the clients; latency is publish to "
        "receive, over every delivery. (!) marks a figure whose delivery check failed."
    )
    from . import mqtt

    lines.extend(mqtt.markdown(results.get("mqtt") or {}))
    from . import socketio_service

    lines.extend(socketio_service.markdown(results.get("socketio_service") or {}))
    floor = results.get("floor", {})
    if floor:
        lines.append("")
        lines.append(
            "Kernel floor on this machine (bench/floor.c: a C program that does nothing but "
            "write() 102-byte frames to N loopback sockets, a C reader on the other core):"
        )
        lines.append("")
        lines.append("| C write() floor | " + " | ".join(f"N={n:,}" for n in sizes) + " |")
        lines.append("|---|" + "---|" * len(sizes))
        for per in (1, 16):
            cells = []
            for n in sizes:
                f = floor.get(str(n), {}).get(f"frames_per_write_{per}", {})
                cells.append(_fmt(f.get("frames_per_s")))
            label = "1 frame per write (steady)" if per == 1 else f"{per} frames per write"
            lines.append(f"| {label}: frames/s | " + " | ".join(cells) + " |")
    hs_floor = results.get("handshake_floor", {})
    if hs_floor:
        cells = [_fmt(hs_floor.get(str(n), {}).get("handshakes_per_s")) for n in sizes]
        lines.append(
            "| handshake floor (bench/handshake_floor.py: uvloop, token checked, 101 written,"
            " nothing else): handshakes/s | " + " | ".join(cells) + " |"
        )
        ours = results.get("summary", {}).get("webpubsub", {})
        ratios = []
        for n in sizes:
            floor_rate = hs_floor.get(str(n), {}).get("handshakes_per_s")
            mine = ours.get(str(n), {}).get("handshakes_per_s")
            ratios.append(_fmt(mine / floor_rate, "x") if floor_rate and mine else "-")
        lines.append("| webpubsub handshakes / handshake floor | " + " | ".join(ratios) + " |")
    lines.append("")
    lines.append("| target | measured | verdict |")
    lines.append("|---|---|---|")
    for t in results["targets"]:
        shown_value = _fmt(t["value"], t["unit"] if t["unit"] in ("x", "ms") else "")
        unit = "" if t["unit"] == "x" else f" {t['unit']}"
        goal = _fmt(t["goal"], t["unit"] if t["unit"] in ("x", "ms") else "")
        lines.append(f"| {t['name']} (goal {goal}{unit}) | {shown_value}{unit} | {t['verdict']} |")
    lines.append("")
    lines.extend(results["checks"])
    return "\n".join(lines) + "\n"


def checks(
    summary: dict[str, Any],
    mqtt_results: dict[str, Any] | None = None,
    sio_results: dict[str, Any] | None = None,
) -> list[str]:
    """Ground-truth and bottleneck checks, one line each."""
    from . import mqtt, socketio_service

    out = []
    problems = mqtt.problems(mqtt_results or {}) + socketio_service.problems(sio_results or {})
    bound = []
    busy = []
    affected = []
    most_others = 0.0
    phases = [
        (f"{LABEL[kind]} N={n} {scenario}", s[scenario])
        for kind, by_n in summary.items()
        for n, s in by_n.items()
        for scenario in ("steady", "burst", "group", "c2g", "stall")
        if scenario in s
    ] + [
        (f"MQTT {mqtt.LABELS[kind]} N={n} {scenario}", s[scenario])
        for kind, by_n in (mqtt_results or {}).get("summary", {}).items()
        for n, s in by_n.items()
        for scenario, _ in mqtt.SCENARIOS
    ]
    for name, r in phases:
        if not r["complete"] and not name.startswith("MQTT "):  # MQTT's: mqtt.problems
            problems.append(
                f"{name}: {r['missing']:,} missing, {r.get('extra', 0):,} extra, "
                f"{r['failed_publishes']:,} publishes refused"
            )
        if r["generator_util"] > 0.9 and r["server_util"] < 0.9:
            bound.append(name)
        deprived = r.get("deprived_runs", 0)
        if deprived:
            busy.append(f"{name} ({deprived} of {r['runs']})")
            if deprived * 2 > r["runs"]:
                affected.append(name)
        most_others = max(most_others, r["other_util"], r["steal_util"])
    for kind, by_n in summary.items():
        for n, s in by_n.items():
            if s["handshake_failures"]:
                problems.append(f"{LABEL[kind]} N={n}: {s['handshake_failures']} failed handshakes")
            storm = s.get("storm")
            if storm is not None and not storm["complete"]:
                why = "not all clients came back" if storm["timed_out"] else ""
                if storm["missing"]:
                    why += f" {storm['missing']:,} missing after their return"
                problems.append(f"{LABEL[kind]} N={n} storm: {why.strip()}")
    if problems:
        out.append("Delivery check: FAILED: " + "; ".join(problems) + ".")
    else:
        out.append(
            "Delivery check: every client received every message addressed to it, in every "
            "scenario (the slow consumer excepted)."
        )
    if bound:
        out.append("Generator-bound (generator core busy, server core not): " + ", ".join(bound))
    else:
        out.append("Generator check: the generator's core was never the bottleneck.")
    if busy:
        out.append(
            "Machine check: other processes took CPU from the server (it got < 85% of its "
            "core) in some runs: "
            + ", ".join(busy)
            + ". "
            + (
                "A median of 3 is robust to one such run."
                if not affected
                else "Most runs were disturbed, so these figures are low: " + ", ".join(affected)
            )
        )
    else:
        out.append(
            "Machine check: the server kept its core in every phase (other processes used "
            f"up to {most_others:.2f} of a core meanwhile)."
        )
    return out


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("bench: matplotlib is not installed; no plot (pip install -e '.[bench]')")
        return False
    summary = results["summary"]
    sizes = results["config"]["sizes"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    colors = {"steady": "tab:blue", "burst": "tab:red", "group": "tab:green", "c2g": "tab:purple"}
    names = {
        "steady": "steady",
        "burst": "burst",
        "group": "group fan-out",
        "c2g": "client-to-group",
    }
    styles = {"webpubsub": "-o", "socketio": "--s"}
    for kind in SERVERS:
        by_n = summary.get(kind)
        if not by_n:
            continue
        ns = [n for n in sizes if str(n) in by_n]
        for scenario, color in colors.items():
            ys = [by_n[str(n)][scenario]["deliveries_per_s"] for n in ns]
            left.plot(ns, ys, styles[kind], color=color, label=f"{LABEL[kind]} {names[scenario]}")
            if scenario in ("steady", "group"):
                ys = [by_n[str(n)][scenario]["p99_ms"] for n in ns]
                right.plot(
                    ns, ys, styles[kind], color=color, label=f"{LABEL[kind]} {names[scenario]}"
                )
    right.axhline(20, color="grey", linewidth=0.8, linestyle=":", label="target 20 ms")
    left.axhline(1_000_000, color="grey", linewidth=0.8, linestyle=":", label="target 1M/s")
    for ax, title, ylabel in (
        (left, "Deliveries per second (counted at the clients)", "deliveries/s"),
        (right, "Publish-to-receive p99 latency", "ms"),
    ):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{n:,}" for n in sizes])
        ax.set_xlabel("connections (N)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7, ncol=2, loc="lower left")
    right.legend(fontsize=7, loc="upper left")
    m = results["meta"]["machine"]
    fig.suptitle(
        f"webpubsub vs Socket.IO {m['versions'].get('socket.io', '')}: {m['cpu']}, "
        f"{m['cores']} cores ({results['meta']['date']})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def update_docs(md: str) -> None:
    if not DOCS.exists():
        log(f"bench: {DOCS} not found; not updated")
        return
    text = DOCS.read_text()
    if DOCS_BEGIN not in text or DOCS_END not in text:
        log(f"bench: {DOCS} has no {DOCS_BEGIN} / {DOCS_END} markers; not updated")
        return
    head, rest = text.split(DOCS_BEGIN, 1)
    _, tail = rest.split(DOCS_END, 1)
    DOCS.write_text(f"{head}{DOCS_BEGIN}\n{md}{DOCS_END}{tail}")
    log(f"bench: updated {shown(DOCS)}")


# -- profiles -------------------------------------------------------------------------------


def _function(frame: str) -> str:
    """``name (path/file.py:123)`` -> ``name (file.py)``: samples per function, not per line."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path, _, line = where.rpartition(":")
    if line.isdigit():
        where = path
    return f"{name} ({where.rsplit('/', 1)[-1]})" if where else name


def summarize_profile(path: Path, top: int = 30) -> str:
    """Self and inclusive share of samples per function from a py-spy raw (collapsed) file."""
    self_counts: dict[str, int] = {}
    incl_counts: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";")]
        total += count
        leaf = frames[-1]
        self_counts[leaf] = self_counts.get(leaf, 0) + count
        for frame in set(frames):
            incl_counts[frame] = incl_counts.get(frame, 0) + count
    if not total:
        return f"{path.name}: no samples\n"
    lines = [f"{path.name}: {total} samples", "", "self %  function"]
    for frame, count in sorted(self_counts.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * count / total:6.1f}  {frame}")
    lines += ["", "incl %  function"]
    for frame, count in sorted(incl_counts.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * count / total:6.1f}  {frame}")
    return "\n".join(lines) + "\n"


# -- main -----------------------------------------------------------------------------------


def render(source: Path, out: Path, docs: bool) -> int:
    """Tables, plot and docs from an earlier run's results.json (nothing is measured)."""
    results = json.loads(source.read_text())
    sizes = results["config"]["sizes"]
    results["summary"] = {
        kind: {n: summarize(r) for n, r in by_n.items()} for kind, by_n in results["raw"].items()
    }
    results["targets"] = [
        {**t.__dict__, "met": t.met, "verdict": t.verdict()}
        for t in targets(
            results["summary"], sizes, results.get("floor"), results.get("handshake_floor")
        )
    ]
    if results.get("mqtt"):
        from . import mqtt

        mqtt.with_summary(results["mqtt"])
    results["checks"] = checks(
        results["summary"], results.get("mqtt"), results.get("socketio_service")
    )
    md = markdown(results)
    out.mkdir(parents=True, exist_ok=True)
    if source.resolve() != (out / "results.json").resolve():
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(md)
    plot(results, out / "results.png")
    if docs:
        update_docs(md)
    log(md)
    return 0


def summarize_profiles(cfg: Config, pattern: str = "*.txt") -> None:
    for path in sorted((cfg.out / "profiles").glob(pattern)):
        if path.name.endswith(".summary.txt"):
            continue
        summary_path = path.with_suffix(".summary.txt")
        summary_path.write_text(summarize_profile(path))
        log(f"bench: profile {shown(summary_path)}")


def mqtt_only(cfg: Config, docs: bool) -> int:
    """``--mqtt only``: the MQTT scenarios alone. Their figures replace the MQTT part of the
    results.json in the output directory (the other figures stay, with their own date) and
    everything is written again from it; without one, the MQTT table is printed."""
    from . import mqtt

    mqtt_results = mqtt.with_summary(mqtt.run(cfg))
    if cfg.profile:
        summarize_profiles(cfg, "mqtt-*.txt")
    path = cfg.out / "results.json"
    if not path.exists():
        log("\n".join(mqtt.markdown(mqtt_results)))
        (cfg.out / "mqtt.json").write_text(json.dumps(mqtt_results, indent=2) + "\n")
        log(f"bench: wrote {shown(cfg.out / 'mqtt.json')}")
        return 0
    results = json.loads(path.read_text())
    results["mqtt"] = mqtt_results
    path.write_text(json.dumps(results, indent=2) + "\n")
    return render(path, cfg.out, docs)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark webpubsub against Socket.IO 4.8, and its MQTT endpoint against "
        "Mosquitto, on this machine (127.0.0.1).",
    )
    parser.add_argument("--quick", action="store_true", help="one run of 1 s per figure")
    parser.add_argument(
        "--sizes", default="1000,10000", help="numbers of connections (default 1000,10000)"
    )
    parser.add_argument(
        "--servers", default=",".join(SERVERS), help="webpubsub,socketio (default both)"
    )
    parser.add_argument("--runs", type=int, help="runs per figure, median quoted (default 3)")
    parser.add_argument("--seconds", type=float, help="seconds of load per run (default 2)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also record py-spy profiles of webpubsub (largest N: handshakes, steady, burst, "
        "group)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=-10,
        help="niceness of the servers and the generator, when allowed (default -10; 0 = off)",
    )
    parser.add_argument(
        "--src",
        help="measure webpubsub from this source directory (e.g. a snapshot of src/) "
        "instead of the one installed in .venv",
    )
    parser.add_argument(
        "--from-json",
        metavar="RESULTS_JSON",
        help="measure nothing: write the table, plot (and with --update-docs, the docs) "
        "again from a results.json of an earlier run",
    )
    parser.add_argument(
        "--mqtt",
        choices=("on", "off", "only"),
        default="on",
        help="the MQTT fan-out against Mosquitto (default on); only: just that, its figures "
        "merged into the results.json already in --out, if any",
    )
    parser.add_argument("--update-docs", action="store_true", help="rewrite docs/benchmarks.md")
    parser.add_argument("--out", default=str(BENCH / "results"), help="results directory")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=15.0,
        help="seconds in all that the run may wait for other processes to go quiet (15)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers and generators started are stopped.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    bootstrap(argv)
    if args.from_json:
        return render(Path(args.from_json), Path(args.out).resolve(), args.update_docs)
    started = time.monotonic()
    sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    servers = [s for s in args.servers.split(",") if s.strip()]
    for s in servers:
        if s not in SERVERS:
            raise SystemExit(f"bench: unknown server {s!r}; choose from {', '.join(SERVERS)}")
    if any(n < GROUP_SIZE or n % GROUP_SIZE for n in sizes):
        raise SystemExit(f"bench: sizes must be multiples of {GROUP_SIZE}")
    raise_fd_limit(max(sizes) + 1000)
    cores = len(os.sched_getaffinity(0))
    two_cores = cores >= 2 and shutil.which("taskset") is not None
    cfg = Config(
        sizes=sizes,
        servers=servers,
        runs=args.runs or (1 if args.quick else 3),
        seconds=args.seconds or (1.0 if args.quick else 2.0),
        settle=0.5 if args.quick else 1.0,
        handshake_runs=1 if args.quick else 3,
        drain=10.0 if args.quick else 15.0,
        server_cpu=0 if two_cores else None,
        generator_cpu=1 if two_cores else None,
        profile=args.profile,
        out=Path(args.out).resolve(),
        quiet_wait=max(0.0, args.quiet_wait),
        src=Path(args.src).resolve() if args.src else None,
    )
    if "webpubsub" in servers:
        check_server(cfg)
    cfg.out.mkdir(parents=True, exist_ok=True)
    cfg.loadgen = build_loadgen()
    cfg.floor = build_loadgen("floor")
    if "socketio" in servers and args.mqtt != "only":
        ensure_peers()
    global NICE
    NICE = args.nice if can_renice(args.nice) else 0
    pinning = (
        "Server pinned to core 0 and load generator to core 1 (taskset)"
        if two_cores
        else "Not pinned (fewer than 2 cores or no taskset): figures are not comparable"
    )
    pinning += f", nice {NICE}." if NICE else "."
    log(f"bench: {pinning} Sizes {sizes}, {cfg.runs} run(s) of {cfg.seconds:g} s per figure.")
    from . import mqtt

    if args.mqtt == "only":
        return mqtt_only(cfg, args.update_docs)
    raw: dict[str, dict[str, Any]] = {kind: {} for kind in servers}
    for n in sizes:
        for kind, result in measure(n, cfg).items():
            raw[kind][str(n)] = result
    floor = {str(n): measure_floor(n, cfg) for n in sizes}
    handshake_floor = (
        {str(n): measure_handshake_floor(n, cfg) for n in sizes} if "webpubsub" in servers else {}
    )
    mqtt_results = (
        mqtt.with_summary(mqtt.run(cfg)) if args.mqtt == "on" and "webpubsub" in servers else {}
    )
    from . import socketio_service

    sio_results = socketio_service.run(cfg) if {"webpubsub", "socketio"} <= set(servers) else {}
    summary = {k: {n: summarize(r) for n, r in by_n.items()} for k, by_n in raw.items()}
    results: dict[str, Any] = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "mode": "quick" if args.quick else "full",
            "machine": machine_info(),
            "pinning": pinning,
            "elapsed_s": round(time.monotonic() - started, 1),
            "webpubsub_source": source_info(cfg) if "webpubsub" in servers else {},
        },
        "config": {
            "sizes": sizes,
            "runs": cfg.runs,
            "seconds": cfg.seconds,
            "payload_bytes": len(PAYLOAD),
            "group_size": GROUP_SIZE,
            "c2g_senders_per_group": C2G_SENDERS_PER_GROUP,
            "steady": {"publishers": STEADY[0], "window": STEADY[1]},
            "burst": {"publishers": BURST[0], "window": BURST[1]},
            "group": {"publishers": GROUPS[0], "window": GROUPS[1]},
        },
        "summary": summary,
        "floor": floor,
        "handshake_floor": handshake_floor,
        "raw": raw,
        "mqtt": mqtt_results,
        "socketio_service": sio_results,
    }
    results["targets"] = [
        {**t.__dict__, "met": t.met, "verdict": t.verdict()}
        for t in targets(summary, sizes, floor, handshake_floor)
    ]
    results["checks"] = checks(summary, mqtt_results, sio_results)
    md = markdown(results)
    (cfg.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (cfg.out / "results.md").write_text(md)
    plotted = plot(results, cfg.out / "results.png")
    if args.profile:
        summarize_profiles(cfg)
    if args.update_docs:
        update_docs(md)
    log("")
    log(md)
    written = ["results.json", "results.md"] + (["results.png"] if plotted else [])
    log(
        f"bench: wrote {', '.join(shown(cfg.out / w) for w in written)} "
        f"in {time.monotonic() - started:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
