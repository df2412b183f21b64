"""Cluster scenarios: broadcast throughput of 3 webpubsub nodes over Redis, and of one
``serve --workers 2``, against 1 node.

    python3 -m bench.cluster              # N=3,000 clients, about a minute and a half
    python3 -m bench.cluster --clients 1500 --runs 1
    python3 -m bench.cluster --no-workers # skip the --workers 2 scenario
    python3 -m bench.cluster --sentinel   # only: seconds of 503 in a Sentinel failover
    python3 -m bench.cluster --recovery   # only: recovery across nodes (~15 s)

Starts a redis-server on a free 127.0.0.1 port, then measures REST broadcast deliveries/s
(bench/run.py's steady and burst shapes, counted at the receivers by bench/loadgen.c):

* 1 node:  one ``webpubsub serve`` with the Redis engine, N clients on it;
* 3 nodes: three nodes on the same Redis, N/3 clients on each (one generator per node),
  every publish sent to the first node, so each message crosses Redis once per node;
* --workers 2: one ``webpubsub serve --workers 2`` (two worker processes on one port, each a
  node on the same Redis), all N clients on its port: the kernel spreads them.

Prints a table (1 node, 3 nodes, --workers 2, ratios) and writes ``bench/results/cluster.json``.

``--sentinel`` runs another scenario instead (about 20 s): a master, a replica and three
sentinels (``down-after-milliseconds`` 1000), two nodes with the default ``[cluster]``
settings on a ``redis+sentinel://`` URL, REST sends through both; the master is killed
(``kill -9``) and the seconds of 503 until the nodes work on the promoted replica are
printed (``bench/results/cluster-sentinel.json``).

Recovery across nodes (part of the default run, or alone with ``--recovery``): two nodes, 500
reliable clients on the first in one group, a steady broadcast (100 messages/s) through the
second; every client's socket is cut at once and each recovers through the second node
(``bench/recovery.py``). Prints the seconds until all were back, the messages lost and
duplicated (must be 0) and the broadcast's p99 meanwhile. Only
127.0.0.1 is used; every phase, wait and subprocess is bounded in time, and every process
started here is stopped on the way out.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from . import run
from .redis_probe import ask, reply_field, sentinel_command
from .run import BUILD, BURST, STEADY, LoadGen, Server, build_loadgen, free_port, log

RESULTS = run.BENCH / "results" / "cluster.json"
RECEIVER_TAIL = 4.0  # receivers keep counting this long after the publisher stops issuing
DEADLINE = 300.0  # the whole run, whatever happens


class Redis:
    """A throwaway redis-server on 127.0.0.1, no persistence (or a sentinel: ``command``)."""

    def __init__(
        self,
        workdir: Path,
        logfile: Path,
        extra: tuple[str, ...] = (),
        command: list[str] | None = None,
        port: int | None = None,
    ):
        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        err = logfile.open("a")
        self.proc = subprocess.Popen(
            command
            or [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                *extra,
            ],
            stdout=err,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        err.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start; see {logfile}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cpu_seconds(self) -> float:
        """used_cpu_user + used_cpu_sys from INFO (microsecond resolution, unlike /proc)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"INFO cpu\r\n")
            data = b""
            for _ in range(100):
                data += sock.recv(65536)
                if b"\r\n" in data:
                    head = data.index(b"\r\n")
                    if len(data) >= head + 2 + int(data[1:head]) + 2:
                        break
        stats = dict(line.split(":", 1) for line in data.decode().splitlines() if ":" in line)
        return float(stats["used_cpu_user"]) + float(stats["used_cpu_sys"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class Cluster:
    """`nodes` webpubsub nodes on one Redis, each with its own generator and N/nodes clients;
    the first generator publishes, the others only count what arrives."""

    def __init__(
        self,
        nodes: int,
        clients: int,
        redis: Redis,
        loadgen: Path,
        logs: Path,
        workers: int = 1,
    ):
        key = secrets.token_urlsafe(32)
        env = dict(os.environ, WEBPUBSUB_REDIS_URL=redis.url, WEBPUBSUB_WORKERS=str(workers))
        self.label = f"{nodes} node{'s' if nodes > 1 else ''}"
        if workers > 1:
            self.label = f"{workers} workers"
        self.redis = redis
        self.servers: list[Server] = []
        self.gens: list[LoadGen] = []
        self.counts = [clients // nodes + (1 if i < clients % nodes else 0) for i in range(nodes)]
        self.inputs = []
        for i in range(nodes):
            port = free_port()
            name = f"cluster{nodes}-node{i}" + (f"-workers{workers}" if workers > 1 else "")
            (logs / f"{name}.server.log").write_text("")
            self.servers.append(
                Server("webpubsub", port, key, None, logs / f"{name}.server.log", env)
            )
            self.inputs.append(run.write_inputs("webpubsub", port, key, 1, BUILD / name))
        self.loadgen = loadgen
        self.logs = logs
        self.phase_id = 0

    def start(self) -> dict[str, Any]:
        for s in self.servers:
            s.start()
        connects = []
        for i, (s, inputs) in enumerate(zip(self.servers, self.inputs, strict=True)):
            name = f"cluster{len(self.servers)}-node{i}-{self.label.replace(' ', '')}"
            gen = LoadGen(
                self.loadgen,
                port=s.port,
                clients=self.counts[i],
                mode="wps",
                paths=inputs.paths,
                templates=inputs.templates,
                groups=1,
                cpu=None,
                logfile=self.logs / f"{name}.loadgen.log",
                drain=10.0,
            )
            self.gens.append(gen)
            connects.append(gen.command("connect", timeout=90))
        ready = sum(c["ready"] for c in connects)
        log(f"  {self.label}: {ready:,}/{sum(self.counts):,} clients connected {self.counts}")
        if ready != sum(self.counts):
            raise RuntimeError(f"{self.label}: only {ready} clients connected")
        return {"clients_per_node": self.counts, "ready": ready}

    def phase(self, name: str, shape: tuple[int, int, str], seconds: float) -> dict[str, Any]:
        """One phase on every generator at once: receivers first, then the publisher."""
        pubs, window, target = shape
        self.phase_id += 1
        node_cpu0 = [tree_cpu_seconds(s) for s in self.servers]
        redis_cpu0 = self.redis.cpu_seconds()
        busy0, _ = run.cpu_times()
        lines = [
            f"run {name} {self.phase_id} {seconds + RECEIVER_TAIL} 0 1 none 0 0"
            for _ in self.gens[1:]
        ]
        lines.insert(0, f"run {name} {self.phase_id} {seconds} {pubs} {window} {target} 0 0")
        for gen, line in list(zip(self.gens, lines, strict=True))[::-1]:
            assert gen.proc.stdin is not None
            gen.proc.stdin.write(line + "\n")
            gen.proc.stdin.flush()
        results = [gen.read(seconds + RECEIVER_TAIL + 40) for gen in self.gens]
        busy1, _ = run.cpu_times()
        wall = max(r["wall_seconds"] for r in results)
        pub = results[0]
        deliveries = sum(r["deliveries"] for r in results)
        expected = pub["publishes"] * sum(self.counts)
        span = max(1e-6, max(r["seconds"] for r in results))
        # CPU over the delivery span (the receivers' idle tail adds next to nothing).
        node_util = [
            round((tree_cpu_seconds(s) - c0) / span, 3)
            for s, c0 in zip(self.servers, node_cpu0, strict=True)
        ]
        redis_s = self.redis.cpu_seconds() - redis_cpu0
        gen_util = round(sum(r["generator_cpu_s"] for r in results) / span, 3)
        out = {
            "publishes": pub["publishes"],
            "failed_publishes": pub["failed_publishes"],
            "deliveries": deliveries,
            "expected": expected,
            "missing": max(0, expected - deliveries),
            "seconds": round(span, 4),
            "deliveries_per_s": round(deliveries / max(span, 1e-6), 1),
            "publishes_per_s": round(pub["publishes"] / max(span, 1e-6), 1),
            "latency_ms_publisher_node": pub["latency_ms"],
            "latency_ms_p99_max_over_nodes": max(r["latency_ms"]["p99"] for r in results),
            "node_util": node_util,
            "redis_util": round(redis_s / span, 3),
            "redis_cpu_us_per_publish": round(1e6 * redis_s / max(pub["publishes"], 1), 2),
            "generator_util": gen_util,
            "machine_util": round((busy1 - busy0) / wall, 3),  # whole phase, tail included
            "wall_seconds": round(wall, 3),
        }
        ok = out["missing"] == 0 and not out["failed_publishes"]
        check = "all delivered" if ok else "INCOMPLETE"
        log(
            f"    {self.label:<8} {name:<7} {out['deliveries_per_s']:>10,.0f} deliveries/s  "
            f"p99 {out['latency_ms_p99_max_over_nodes']:8.2f} ms  nodes "
            f"{'+'.join(f'{u:.2f}' for u in node_util)} redis {out['redis_util']:.2f} "
            f"gen {gen_util:.2f} machine {out['machine_util']:.2f}  "
            f"[{deliveries:,}/{expected:,} {check}]"
        )
        return out

    def stop(self) -> None:
        for gen in self.gens:
            try:
                gen.close()
            except Exception:  # stop the rest whatever happens
                gen.proc.kill()
        for s in self.servers:
            s.stop()


def tree_cpu_seconds(server: Server) -> float:
    """CPU seconds of a server process and its children (the workers of --workers N)."""
    total = server.cpu_seconds()
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children")
    for child in children.read_text().split() if children.exists() else []:
        stat = Path(f"/proc/{child}/stat")
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def measure(
    nodes: int,
    args: argparse.Namespace,
    redis: Redis,
    loadgen: Path,
    logs: Path,
    workers: int = 1,
) -> dict:
    cluster = Cluster(nodes, args.clients, redis, loadgen, logs, workers)
    result: dict[str, Any] = {"nodes": nodes, "workers": workers}
    try:
        result.update(cluster.start())
        time.sleep(1.0)
        cluster.phase("warm-up", BURST, args.seconds / 2)
        for name, shape in (("steady", STEADY), ("burst", BURST)):
            result[name] = [cluster.phase(name, shape, args.seconds) for _ in range(args.runs)]
    finally:
        cluster.stop()
    return result


def median(runs: list[dict[str, Any]], key: str) -> float:
    values = sorted(r[key] for r in runs)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def projection(one: dict[str, Any], three: dict[str, Any], clients: int) -> dict[str, Any]:
    """Deliveries/s of k nodes on a box with a core each (plus cores for Redis and load):
    k x (1-node burst deliveries/s per core of node CPU), bounded by Redis, which does
    ~c x k CPU-seconds per publish (c per subscribing node, measured in the 3-node run)."""
    b1, b3 = one["burst"], three["burst"]
    per_core = median(b1, "deliveries_per_s") / max(
        1e-6, median([{"u": r["node_util"][0]} for r in b1], "u")
    )
    redis_us_per_node = max(0.01, median(b3, "redis_cpu_us_per_publish") / 3)
    rows = {}
    for k in (1, 3, 8, 16):
        redis_publishes = 1e6 / (redis_us_per_node * k)
        rows[str(k)] = {
            "fanout_bound": round(k * per_core),
            "redis_bound": round(redis_publishes * clients),
            "projected_deliveries_per_s": round(min(k * per_core, redis_publishes * clients)),
        }
    return {
        "model": "min(k * F, N / (c * k)); F = 1-node burst deliveries/s per node core, "
        "c = Redis CPU-seconds per publish per subscribing node (3-node burst)",
        "F_deliveries_per_node_core_s": round(per_core),
        "c_redis_us_per_publish_per_node": round(redis_us_per_node, 2),
        "clients": clients,
        "nodes": rows,
    }


def wait_for_file(path: Path, prefix: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 10) + 2):
        if path.exists() and any(
            line.startswith(prefix) for line in path.read_text(errors="replace").splitlines()
        ):
            return True
        if time.monotonic() >= deadline:
            return False
        log(f"  waiting for {path} to show '{prefix}' (another benchmark is running)")
        time.sleep(10)
    return False


def wait_until(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"bench.cluster: timed out waiting for {what}")


def sentinel_failover(args: argparse.Namespace) -> int:
    """Seconds of 503 while Sentinel promotes the replica of a killed master."""
    service, down_after = "benchmaster", 1000
    sentinel_cmd = sentinel_command() or ["redis-server", "--sentinel"]
    logs = run.BENCH / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    work = BUILD / "cluster-sentinel"
    shutil.rmtree(work, ignore_errors=True)
    procs: list[Redis] = []
    servers: list[Server] = []
    samples: list[tuple[float, int]] = []  # (monotonic, HTTP status or 0 for no answer)
    stop = threading.Event()
    try:
        master = Redis(work / "master", logs / "sentinel.master.log")
        procs.append(master)
        replica = Redis(
            work / "replica",
            logs / "sentinel.replica.log",
            ("--replicaof", "127.0.0.1", str(master.port)),
        )
        procs.append(replica)
        wait_until(
            lambda: (
                reply_field(ask(replica.port, "INFO", "replication"), "master_link_status") == "up"
            ),
            "the replica to sync",
        )
        ports = [free_port() for _ in range(3)]
        for port in ports:
            conf = work / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {work}\n"
                f"sentinel monitor {service} 127.0.0.1 {master.port} 2\n"
                f"sentinel down-after-milliseconds {service} {down_after}\n"
                f"sentinel failover-timeout {service} 3000\n"
            )
            procs.append(
                Redis(
                    work,
                    logs / "sentinel.sentinels.log",
                    command=[*sentinel_cmd, str(conf)],
                    port=port,
                )
            )
        for port in ports:
            wait_until(
                lambda port=port: (
                    reply_field(ask(port, "SENTINEL", "MASTER", service), "num-other-sentinels")
                    == "2"
                    and reply_field(ask(port, "SENTINEL", "MASTER", service), "num-slaves") == "1"
                ),
                f"sentinel {port} to see its peers and the replica",
            )
        url = "redis+sentinel://" + ",".join(f"127.0.0.1:{p}" for p in ports) + f"/{service}/0"
        key = secrets.token_urlsafe(32)
        env = dict(os.environ, WEBPUBSUB_REDIS_URL=url)
        for i in range(2):
            server = Server(
                "webpubsub", free_port(), key, None, logs / f"sentinel.node{i}.log", env
            )
            servers.append(server)
            server.start()

        def sender(port: int) -> None:
            path = f"/api/hubs/{run.HUB}/:send?{run.API_VERSION}"
            aud = f"http://127.0.0.1:{port}{path}"
            conn: http.client.HTTPConnection | None = None
            while not stop.is_set():
                now = int(time.time())
                token = run.jwt_hs256({"aud": aud, "iat": now, "exp": now + 3600}, key)
                try:
                    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    conn.request(
                        "POST",
                        path,
                        body=b'{"n":1}',
                        headers={
                            "Authorization": f"Bearer {token}",
                            "Content-Type": "application/json",
                        },
                    )
                    response = conn.getresponse()
                    response.read()
                    samples.append((time.monotonic(), response.status))
                except (OSError, http.client.HTTPException):
                    samples.append((time.monotonic(), 0))
                    if conn is not None:
                        conn.close()
                    conn = None
                time.sleep(0.01)

        threads = [
            threading.Thread(target=sender, args=(s.port,), daemon=True)
            for s in servers
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        time.sleep(2.0)
        master.proc.kill()
        master.proc.wait(timeout=10)
        killed = time.monotonic()
        log(f"bench.cluster --sentinel: master 127.0.0.1:{master.port} killed (kill -9)")
        deadline = killed + 40
        while time.monotonic() < deadline:
            refused = [t for t, status in samples if t > killed and status != 202]
            if refused and sum(1 for t, st in samples if t > refused[-1] and st == 202) >= 100:
                break
            time.sleep(0.1)
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
    finally:
        stop.set()
        for server in servers:
            server.stop()
        for proc in procs:
            proc.stop()
    after = [(t - killed, status) for t, status in samples if t > killed]
    refused = [t for t, status in after if status != 202]
    if not refused:
        raise SystemExit("bench.cluster --sentinel: no 503 seen: did the master fail?")
    accepted_again = [t for t, status in after if status == 202 and t > refused[-1]]
    if not accepted_again:
        raise SystemExit("bench.cluster --sentinel: REST never accepted again in 40 s")
    statuses: dict[str, int] = {}
    for _, status in after:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    result = {
        "machine": run.machine_info(),
        "down_after_milliseconds": down_after,
        "cluster_settings": "defaults (heartbeat_interval 2 s, redis_timeout 2 s)",
        "first_refusal_s": round(refused[0], 2),
        "last_refusal_s": round(refused[-1], 2),
        "seconds_of_503": round(refused[-1] - refused[0], 2),
        "accepting_again_s": round(accepted_again[0], 2),
        "answers_after_kill": statuses,
    }
    out = run.BENCH / "results" / "cluster-sentinel.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    log(
        f"  Sentinel failover (down-after {down_after} ms, default [cluster] settings): "
        f"503 from {result['first_refusal_s']} s to {result['last_refusal_s']} s after the "
        f"kill = {result['seconds_of_503']} s of 503; accepting again "
        f"{result['accepting_again_s']} s after the kill; answers {statuses}"
    )
    log(f"  wrote {run.shown(out)}")
    return 0


def recovery_across_nodes(redis: Redis, logs: Path, clients: int) -> dict[str, Any]:
    """Two nodes, clients dropped on one and recovered through the other (bench/recovery.py)."""
    key = secrets.token_urlsafe(32)
    env = dict(os.environ, WEBPUBSUB_REDIS_URL=redis.url, WEBPUBSUB_WORKERS="1")
    servers = [
        Server("webpubsub", free_port(), key, None, logs / f"recovery.node{i}.log", env)
        for i in range(2)
    ]
    try:
        for server in servers:
            server.start()
        command = [str(run.VENV / "bin" / "python"), "-m", "bench.recovery"]
        command += ["--from", str(servers[0].port), "--to", str(servers[1].port)]
        command += [f"--key={key}", "--clients", str(clients)]  # a key may start with "-"
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=120, cwd=run.BENCH.parent
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"bench.recovery failed: {done.stderr[-2000:]}")
        result: dict[str, Any] = json.loads(lines[-1])
    finally:
        for server in servers:
            server.stop()
    verdict = "none lost" if result["lost"] == 0 and result["duplicated"] == 0 else "LOST"
    log(
        f"  recovery across nodes: {result['clients']:,} clients cut on node 0, all back "
        f"through node 1 in {result['recovered_all_s']:.2f} s (median "
        f"{result['recovered_median_s']:.2f} s); {result['messages']:,} messages, lost "
        f"{result['lost']}, duplicated {result['duplicated']} [{verdict}]; broadcast p99 "
        f"meanwhile {result['latency_ms_p99_while_recovering']} ms"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.cluster", description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=3000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--wait-for", default="", help="poll FILE until a line starts with 'exit='")
    p.add_argument("--wait-max", type=float, default=480.0)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument(
        "--no-workers", action="store_true", help="skip the 1 process vs --workers 2 scenario"
    )
    p.add_argument(
        "--sentinel", action="store_true", help="only the Sentinel failover scenario (~20 s)"
    )
    p.add_argument(
        "--recovery", action="store_true", help="only the recovery across nodes scenario (~15 s)"
    )
    p.add_argument("--no-recovery", action="store_true", help="skip the recovery scenario")
    p.add_argument("--recovery-clients", type=int, default=500)
    args = p.parse_args(argv)
    if shutil.which("redis-server") is None:
        raise SystemExit("bench.cluster: redis-server is needed (apt-get install redis-server)")
    if not (run.VENV / "bin" / "webpubsub").exists():
        raise SystemExit("bench.cluster: run `python3 -m bench --quick` once to set up .venv")
    if args.sentinel:
        return sentinel_failover(args)
    if args.recovery:
        logs = run.BENCH / "results" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        redis = Redis(BUILD / "cluster-redis", logs / "cluster.redis.log")
        try:
            result = recovery_across_nodes(redis, logs, args.recovery_clients)
        finally:
            redis.stop()
        out = run.BENCH / "results" / "cluster-recovery.json"
        out.write_text(json.dumps({"machine": run.machine_info(), **result}, indent=2) + "\n")
        log(f"  wrote {run.shown(out)}")
        return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1
    if args.wait_for and not wait_for_file(Path(args.wait_for), "exit=", args.wait_max):
        raise SystemExit(f"bench.cluster: {args.wait_for} did not finish in time")
    run.raise_fd_limit(args.clients + 1000)
    if run.can_renice(-10):
        run.NICE = -10
    started = time.monotonic()
    loadgen = build_loadgen()
    logs = run.BENCH / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    redis = Redis(BUILD / "cluster-redis", logs / "cluster.redis.log")
    log(f"bench.cluster: redis-server on 127.0.0.1:{redis.port}, N = {args.clients:,}")
    try:
        one = measure(1, args, redis, loadgen, logs)
        if time.monotonic() - started > DEADLINE:
            raise SystemExit("bench.cluster: out of time")
        three = measure(3, args, redis, loadgen, logs)
        workers = None
        if not args.no_workers:
            if time.monotonic() - started > DEADLINE:
                raise SystemExit("bench.cluster: out of time")
            workers = measure(1, args, redis, loadgen, logs, workers=2)
        recovery = None
        if not args.no_recovery:
            recovery = recovery_across_nodes(redis, logs, args.recovery_clients)
    finally:
        redis.stop()
    table = {}
    for name in ("steady", "burst"):
        r1 = median(one[name], "deliveries_per_s")
        r3 = median(three[name], "deliveries_per_s")
        table[name] = {"1_node": r1, "3_nodes": r3, "ratio": round(r3 / r1, 2)}
        if workers is not None:
            w2 = median(workers[name], "deliveries_per_s")
            table[name].update({"workers_2": w2, "workers_ratio": round(w2 / r1, 2)})
    results = {
        "machine": run.machine_info(),
        "source": run.source_info(run.Config([], [], 0, 0, 0, 0, 0, None, None, False, Path())),
        "clients": args.clients,
        "seconds": args.seconds,
        "runs": args.runs,
        "nice": run.NICE,
        "one_node": one,
        "three_nodes": three,
        "workers_2": workers,
        "recovery_across_nodes": recovery,
        "table": table,
        "projection": projection(one, three, args.clients),
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    log("")
    log(f"  broadcast to {args.clients:,} clients, median deliveries/s ({args.runs} runs)")
    log(
        f"  {'scenario':<8} {'1 node':>12} {'3 nodes':>12} {'ratio':>7} "
        f"{'--workers 2':>12} {'ratio':>7}"
    )
    for name, row in table.items():
        line = f"  {name:<8} {row['1_node']:>12,.0f} {row['3_nodes']:>12,.0f} {row['ratio']:>6.2f}x"
        if "workers_2" in row:
            line += f" {row['workers_2']:>12,.0f} {row['workers_ratio']:>6.2f}x"
        log(line)
    proj = results["projection"]
    log(f"  projection ({proj['model']}):")
    for k, row in proj["nodes"].items():
        log(f"    {k:>2} nodes: {row['projected_deliveries_per_s']:>12,} deliveries/s")
    log(f"  wrote {run.shown(out)} in {results['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
