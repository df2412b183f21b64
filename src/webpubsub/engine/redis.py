"""The Redis engine: several ``webpubsub serve`` nodes act as one service.

Commands travel on one (sharded) pub/sub channel per hub; a node subscribes to the hubs it
has connections in, so a message costs one publish whatever the number of nodes. Membership
that REST asks about lives in Redis under ``wps:{hub}:`` keys (the braces keep one hub's keys
in one Redis Cluster slot), kept by Lua scripts (``scripts.py``) so that concurrent changes
stay consistent:

* ``c:<id>`` hash (node, user), ``cg:<id>`` set of its groups, ``r:<id>`` set of its roles;
* ``u:<user>`` set of connection ids, ``g:<group>`` sorted set of connection ids (paging by
  id), ``all`` set of the hub's connection ids;
* ``wps:node:<node>`` heartbeat key with a TTL, ``wps:n:<node>`` the node's ``hub\\0id``
  entries, ``wps:nodes`` the set of node ids. A node whose heartbeat expired has its entries
  removed (atomically) by the first live node that notices;
* ``wps:boot`` a marker that tells the nodes when Redis lost its data (a restart without
  persistence): every node then registers its connections again.

Writes go through one ordered queue, flushed as one pipeline per loop turn. A batch that
fails is retried, in order, until it is written or ``retry_window`` has passed; publishes
carry a per-node sequence number so that a retried batch is never applied twice. A batch
written into a Redis that had just restarted empty is published again once every node has
had time to subscribe again (the writer holds everything until then). So a send accepted by
a healthy node is published, whatever Redis does for up to ``retry_window``; a REST send
does not wait for its write (bursts fan out together), a membership change does
(read-your-writes).

Every long-lived task is supervised: an unexpected exception is logged with its traceback,
the node reports not ready, and the task starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ..core import commands as c
from ..core.connection import Connection
from ..core.errors import ServiceUnavailable
from ..core.node import Node
from ..core.roles import Permission, has_permission
from .codec import CodecError, decode_command, encode_command
from .scripts import CLOSE, FORGET_NODE, MEMBERSHIP, REGISTER, ROLES, UNREGISTER

log = logging.getLogger("webpubsub.engine.redis")

NODES = "wps:nodes"
BOOT = "wps:boot"
MAX_QUEUED_OPS = 100_000
PUBLISH = frozenset({"publish", "spublish"})
MAX_SENDERS = 10_000  # node ids whose last sequence number we remember
RETRY_DELAYS = (0.05, 0.1, 0.2, 0.5)  # between attempts at a failed batch
PROBE_INTERVAL = 0.2  # how often an unhealthy node tries Redis again


def hub_prefix(hub: str) -> str:
    return f"wps:{{{hub}}}:"


def channel(hub: str) -> str:
    return f"wps:{{{hub}}}:commands"


@dataclass(slots=True)
class _Op:
    """One queued Redis operation: a script call or a plain command."""

    name: str
    keys: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)
    done: asyncio.Future[None] | None = None
    created: float = 0.0
    cancelled: bool = False  # its REST caller gave up: do not retry it


class RedisEngine:
    """Broker, shared membership and node liveness over one Redis server."""

    def __init__(
        self,
        url: str,
        node: Node,
        *,
        node_ttl: float = 6.0,
        heartbeat_interval: float = 2.0,
        timeout: float = 2.0,
        publish_timeout: float = 5.0,
        retry_window: float = 30.0,
    ) -> None:
        self.url = url
        self.node = node
        self.node_id = secrets.token_hex(6)
        self.node_ttl = node_ttl
        self.heartbeat_interval = heartbeat_interval
        self.publish_timeout = publish_timeout
        self.retry_window = retry_window
        # A pooled connection left stale by a Redis restart is replaced and the call tried
        # again, instead of failing the first caller (and marking the node unhealthy).
        self.redis = aioredis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=False,
            # Only a broken connection is retried: a timeout (a stalled Redis) must fail
            # after ``timeout``, so that the node reports it instead of waiting it out.
            retry=Retry(
                ExponentialBackoff(cap=0.2, base=0.02), 2, supported_errors=(RedisConnectionError,)
            ),
        )
        self._scripts = {
            "register": self.redis.register_script(REGISTER),
            "unregister": self.redis.register_script(UNREGISTER),
            "close": self.redis.register_script(CLOSE),
            "membership": self.redis.register_script(MEMBERSHIP),
            "roles": self.redis.register_script(ROLES),
            "forget": self.redis.register_script(FORGET_NODE),
        }
        self._sender = self.node_id.encode()
        self._sequence = 0  # of our publishes; receivers drop what they already applied
        self._seen: dict[bytes, int] = {}  # the last sequence applied, by sender node
        self._ops: list[_Op] = []
        self._wake = asyncio.Event()
        self._channels: set[str] = set()
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sharded = False
        self._closing = False
        # What "healthy" is made of: Redis answers, our registrations are in Redis, we are
        # subscribed (we receive the other nodes' commands), and no task is down.
        self._redis_ok = False
        self._synced = False
        self._subscribed = False
        self._failed_tasks: set[str] = set()
        self._boot: bytes | None = None
        self._settle_until = 0.0  # monotonic: negative answers are unsure before it
        self._last_beat = 0.0
        self._collect_after = 0.0  # monotonic: no dead-node collection before it
        self._resyncing: asyncio.Task[None] | None = None
        # Service-wide connection counts: each node reports its own with its heartbeat and
        # reads the others' (as of their last heartbeat, so at most one interval old).
        self.local_connections: Callable[[], int] = lambda: 0
        self._peer_connections = 0
        self._peer_hub_connections: dict[str, int] = {}
        self._first_subscription = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Ready to serve: Redis answers, shared state is ours, nothing is down."""
        return self._redis_ok and self._synced and self._subscribed and not self._failed_tasks

    @property
    def problem(self) -> str:
        """Why the node is not ready (for /readyz and logs), or "ok"."""
        if not self._redis_ok:
            return "Redis unreachable"
        if self._failed_tasks:
            return f"cluster task down: {', '.join(sorted(self._failed_tasks))}"
        if not self._synced:
            return "re-registering connections in Redis"
        if not self._subscribed:
            return "not subscribed to the other nodes"
        return "ok"

    async def start(self) -> None:
        """Connect (raises ServiceUnavailable when Redis is unreachable) and start serving."""
        try:
            info = await self.redis.info("server")
            await self._beat()
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(
                f"Redis at {_safe_url(self.url)} is unreachable: {exc}"
            ) from exc
        major = int(str(info.get("redis_version", "0")).split(".")[0] or 0)
        self._sharded = major >= 7
        self._redis_ok = self._synced = True
        self._tasks = [
            self._supervise("redis-writer", self._writer),
            self._supervise("redis-reader", self._reader),
            self._supervise("redis-heartbeat", self._heartbeat),
        ]
        try:
            await asyncio.wait_for(self._first_subscription.wait(), 10)
        except TimeoutError:
            raise ServiceUnavailable(
                f"Redis at {_safe_url(self.url)} did not take our subscription"
            ) from None
        log.info(
            "node %s joined the cluster at %s (sharded pub/sub: %s)",
            self.node_id,
            _safe_url(self.url),
            self._sharded,
        )

    async def close(self) -> None:
        """Leave the cluster: flush, remove this node's entries, stop the tasks."""
        self._closing = True
        with contextlib.suppress(RedisError, OSError, ServiceUnavailable, asyncio.TimeoutError):
            await asyncio.wait_for(self.flush(), 5)
            await asyncio.wait_for(self._forget_node(self.node_id, force=True), 5)
        for task in [*self._tasks, self._resyncing]:
            if task is not None:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        await self.redis.aclose()

    def _supervise(self, name: str, body: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run a long-lived task; an unexpected exception is logged and the task restarted."""

        async def run() -> None:
            while not self._closing:
                try:
                    await body()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self._failed_tasks.add(name)
                    log.exception("cluster task %s failed; restarting it", name)
                    await asyncio.sleep(0.5)
                    self._failed_tasks.discard(name)

        return asyncio.get_running_loop().create_task(run(), name=name)

    # -- Engine protocol (called by the node, synchronously) --------------------------

    def publish(self, hub: str, command: c.Command) -> None:
        self._queue(self._publish_op(hub, command))

    def _publish_op(self, hub: str, command: c.Command) -> _Op:
        self._sequence += 1
        head = self._sender + b" " + str(self._sequence).encode() + b"\n"
        payload = head + encode_command(command)
        return _Op("spublish" if self._sharded else "publish", [channel(hub)], [payload])

    def record_soon(self, hub: str, command: c.Command) -> None:
        for op in self._record_ops(hub, command):
            self._queue(op)

    def connection_added(self, conn: Connection, groups: Iterable[str]) -> None:
        for op in self._register_ops(conn, groups):
            self._queue(op)

    def connection_removed(self, conn: Connection) -> None:
        self._queue(_Op("unregister", [hub_prefix(conn.hub)], [conn.connection_id]))
        self._queue(_Op("srem", [f"wps:n:{self.node_id}"], [f"{conn.hub}\0{conn.connection_id}"]))

    def hub_added(self, hub: str) -> None:
        self._channels.add(channel(hub))
        if self._pubsub is not None:
            asyncio.get_running_loop().create_task(self._subscribe([channel(hub)]))

    def hub_removed(self, hub: str) -> None:
        self._channels.discard(channel(hub))
        if self._pubsub is not None:
            asyncio.get_running_loop().create_task(self._unsubscribe([channel(hub)]))

    # -- REST side: wait for our writes ------------------------------------------------

    def check_ready(self) -> None:
        """Raise ServiceUnavailable (REST answers 503) when this node cannot serve now."""
        if not self.healthy:
            raise ServiceUnavailable(
                f"The cluster is not available on this node ({self.problem}); retry later.",
                code="Error.ServiceUnavailable.Redis",
            )

    async def commit(self, hub: str, command: c.Command) -> None:
        """Record a REST command's membership effect and wait until Redis has it all.

        A send changes no membership: its publish is already queued in order and will be
        written (retried through outages up to ``retry_window``), so the call does not wait.
        """
        ops = self._record_ops(hub, command, rest=True)
        if not ops:
            return
        for op in ops:
            self._queue(op)
        await self.flush()

    async def flush(self) -> None:
        """Wait until everything queued so far reached Redis (ServiceUnavailable if not)."""
        await self._wait(_Op("ping"))

    async def _wait(self, op: _Op) -> None:
        op.done = asyncio.get_running_loop().create_future()
        self._queue(op)
        try:
            await asyncio.wait_for(asyncio.shield(op.done), self.publish_timeout)
        except TimeoutError:
            op.cancelled = True
            op.done.add_done_callback(_consume)
            raise ServiceUnavailable(
                f"The cluster's Redis server did not take the request in "
                f"{self.publish_timeout:g} s; retry later.",
                code="Error.ServiceUnavailable.Redis",
            ) from None

    def check_settled(self) -> None:
        """After Redis lost its data, the nodes re-register: refuse what could miss some."""
        if time.monotonic() < self._settle_until:
            raise ServiceUnavailable(
                "The cluster is re-registering its connections after a Redis restart; "
                "retry in a second.",
                code="Error.ServiceUnavailable.Resync",
            )

    # -- Directory (REST queries) -------------------------------------------------------

    async def connection_exists(self, hub: str, connection_id: str) -> bool:
        found = bool(await self._query("exists", hub_prefix(hub) + "c:" + connection_id))
        return found or self._negative()

    async def user_exists(self, hub: str, user_id: str) -> bool:
        found = bool(await self._query("scard", hub_prefix(hub) + "u:" + user_id))
        return found or self._negative()

    async def group_exists(self, hub: str, group: str) -> bool:
        found = bool(await self._query("zcard", hub_prefix(hub) + "g:" + group))
        return found or self._negative()

    async def group_members(
        self, hub: str, group: str, after: str | None, limit: int
    ) -> list[tuple[str, str | None]]:
        prefix = hub_prefix(hub)
        start = "(" + after if after is not None else "-"
        ids = await self._query(
            "zrange", prefix + "g:" + group, start, "+", bylex=True, offset=0, num=limit
        )
        self.check_settled()
        if not ids:
            return []
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for raw in ids:
                    pipe.hget(prefix + "c:" + raw.decode(), "user")
                users = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        return [
            (raw.decode(), user.decode() if user else None)
            for raw, user in zip(ids, users, strict=True)
        ]

    async def has_permission(
        self, hub: str, connection_id: str, permission: Permission, target: str | None
    ) -> bool:
        roles = await self._query("smembers", hub_prefix(hub) + "r:" + connection_id)
        if not await self.connection_exists(hub, connection_id):
            return False
        return has_permission({r.decode() for r in roles}, permission, target)

    def _negative(self) -> bool:
        """A "not found" is only sure once every node has re-registered after data loss."""
        self.check_settled()
        return False

    async def _query(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """One read, with the boot marker in the same round trip (data loss is noticed)."""
        self.check_ready()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(BOOT, _boot_value(), nx=True)
                pipe.get(BOOT)
                getattr(pipe, name)(*args, **kwargs)
                _, boot, result = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        self._check_boot(boot)
        return result

    # -- what a command means for shared membership -----------------------------------

    def _register_ops(self, conn: Connection, groups: Iterable[str]) -> list[_Op]:
        roles = sorted(conn.roles)
        args: list[Any] = [conn.connection_id, self.node_id, conn.user_id or "", len(roles)]
        args += roles
        args += list(groups)
        return [
            _Op("register", [hub_prefix(conn.hub)], args),
            _Op("sadd", [f"wps:n:{self.node_id}"], [f"{conn.hub}\0{conn.connection_id}"]),
        ]

    def _record_ops(self, hub: str, command: c.Command, rest: bool = False) -> list[_Op]:
        keys = [hub_prefix(hub)]
        match command:
            case c.AddToGroup(target, group) | c.RemoveFromGroup(target, group):
                op = "join" if isinstance(command, c.AddToGroup) else "leave"
                return [_Op("membership", keys, [op, *_mode(target), group])]
            case c.RemoveFromAllGroups(target):
                return [_Op("membership", keys, ["leaveall", *_mode(target)])]
            case c.AddToGroups(groups, None) | c.RemoveFromGroups(groups, None) if rest:
                op = "join" if isinstance(command, c.AddToGroups) else "leave"
                return [_Op("membership", keys, [op, "a", "", *groups])]
            case c.CloseConnections(target, _, excluded) if rest:
                return [_Op("close", keys, [*_mode(target), *sorted(excluded)])]
            case c.Grant(connection_id, permission, target_name):
                role = f"webpubsub.{permission.value}" + (f".{target_name}" if target_name else "")
                return [_Op("roles", keys, ["grant", connection_id, role])]
            case c.Revoke(connection_id, permission, target_name):
                base = f"webpubsub.{permission.value}"
                if target_name:
                    return [_Op("roles", keys, ["revoke", connection_id, f"{base}.{target_name}"])]
                return [_Op("roles", keys, ["revokeall", connection_id, base])]
        return []

    # -- the writer: one ordered pipeline per loop turn, failed batches retried ----------

    def _queue(self, op: _Op) -> None:
        try:
            # Encoded here, once: a value Redis cannot take is refused alone, at its source,
            # instead of failing (and being retried with) a whole batch.
            op.keys = [_encode(k) for k in op.keys]
            op.args = [_encode(a) for a in op.args]
        except (UnicodeError, TypeError) as exc:
            log.error("refusing a Redis write that cannot be encoded (%s): %r", exc, op.name)
            _fail(op, ServiceUnavailable("The request holds a value Redis cannot store."))
            return
        if len(self._ops) >= MAX_QUEUED_OPS:
            log.error("dropping Redis writes: %d queued while Redis is unreachable", len(self._ops))
            self._synced = False  # registrations may be among them: register again later
            _fail(op, ServiceUnavailable("The cluster's Redis queue is full."))
            return
        op.created = time.monotonic()
        self._ops.append(op)
        self._wake.set()

    async def _writer(self) -> None:
        attempt = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            hold = self._settle_until - time.monotonic()
            if hold > 0:
                # Redis restarted empty: until every node is subscribed again, what we
                # publish could miss some of them. Hold it all, in order.
                await asyncio.sleep(hold)
            batch = [op for op in self._ops if not op.cancelled]
            self._ops = []
            if not batch:
                continue
            try:
                boot = await self._write(batch)
            except (RedisError, OSError) as exc:
                self._set_redis_ok(False, exc)
                self._ops = self._still_worth_writing(batch) + self._ops
                await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
                attempt += 1
                self._wake.set()
                continue
            except Exception as exc:
                log.exception("a batch of %d Redis writes failed unexpectedly", len(batch))
                for op in batch:
                    _fail(op, _unavailable(exc))
                self._synced = False
                continue
            attempt = 0
            self._set_redis_ok(True)
            if self._check_boot(boot) or time.monotonic() < self._settle_until:
                # Written into a Redis that had just restarted empty, perhaps before every
                # node subscribed again: publish it once more when they all have (receivers
                # drop the copies they already applied, by sequence number).
                self._ops = [op for op in batch if op.name in PUBLISH] + self._ops
                self._wake.set()
            for op in batch:
                if op.done is not None and not op.done.done():
                    op.done.set_result(None)

    async def _write(self, batch: list[_Op]) -> bytes | None:
        """One pipeline for the batch; returns the boot marker read in the same trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(BOOT, _boot_value(), nx=True)
            pipe.get(BOOT)
            for op in batch:
                script = self._scripts.get(op.name)
                if script is not None:
                    # Inside a pipeline this only queues EVALSHA (scripts load on NOSCRIPT).
                    await script(keys=op.keys, args=op.args, client=pipe)
                elif op.name == "ping":
                    pipe.ping()
                else:
                    getattr(pipe, op.name)(*op.keys, *op.args)
            results = await pipe.execute()
        boot: bytes | None = results[1]
        return boot

    def _still_worth_writing(self, batch: list[_Op]) -> list[_Op]:
        """The failed batch minus what its caller gave up on or what waited too long."""
        oldest = time.monotonic() - self.retry_window
        kept: list[_Op] = []
        for op in batch:
            if op.cancelled:
                continue
            if op.created < oldest:
                self._synced = False  # a registration may be lost: register again
                _fail(op, ServiceUnavailable("The cluster's Redis server is unavailable."))
                continue
            kept.append(op)
        given_up = len(batch) - len(kept) - sum(op.cancelled for op in batch)
        if given_up:
            log.error("gave up %d Redis write(s) older than %g s", given_up, self.retry_window)
        return kept

    # -- the reader: commands from the other nodes -------------------------------------

    async def _reader(self) -> None:
        delay = 0.05
        while not self._closing:
            try:
                self._pubsub = self.redis.pubsub()
                if self._channels:
                    await self._subscribe(list(self._channels), raise_errors=True)
                else:
                    # Keep the connection open even before the first hub appears.
                    await self._pubsub.subscribe("wps:control")
                self._subscribed = True
                self._first_subscription.set()
                if not self._synced:
                    self._resync_soon()
                delay = 0.05
                while True:
                    message = await self._pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=1.0
                    )
                    if message is not None:
                        self._deliver(message)
            except (RedisError, OSError, ServiceUnavailable) as exc:
                # Commands published while we are not subscribed never reach us: we are not
                # ready until subscribed again, and our connections re-register then.
                self._subscribed = False
                self._set_redis_ok(False, exc)
                with contextlib.suppress(Exception):
                    await self._pubsub.aclose()
                self._pubsub = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _deliver(self, message: dict[str, Any]) -> None:
        data: bytes = message.get("data") or b""
        if not isinstance(data, bytes):
            return
        head, _, body = data.partition(b"\n")
        sender, _, raw_sequence = head.partition(b" ")
        if sender == self._sender:
            return  # our own command: already applied locally
        raw_channel = message.get("channel", b"")
        name = raw_channel.decode("utf-8", "replace") if isinstance(raw_channel, bytes) else ""
        if not (name.startswith("wps:{") and name.endswith("}:commands")):
            return
        try:
            sequence = int(raw_sequence)
        except ValueError:
            log.warning("ignoring a command without a sequence number on %s", name)
            return
        if sequence <= self._seen.get(sender, 0):
            return  # a retried batch: applied already
        if sender not in self._seen and len(self._seen) >= MAX_SENDERS:
            del self._seen[next(iter(self._seen))]  # the oldest node seen: long gone
        self._seen[sender] = sequence
        hub = name[len("wps:{") : -len("}:commands")]
        try:
            command = decode_command(body)
        except CodecError as exc:
            log.warning("ignoring a malformed command on %s: %s", name, exc)
            return
        try:
            self.node.apply(hub, command)
        except Exception:
            # One command this node cannot apply must not cut it off from the others.
            log.exception("could not apply a command from node %s on %s", sender.decode(), name)

    async def _subscribe(self, channels: list[str], raise_errors: bool = False) -> None:
        if self._pubsub is None:
            return
        try:
            if self._sharded:
                await self._pubsub.ssubscribe(*channels)
            else:
                await self._pubsub.subscribe(*channels)
        except (RedisError, OSError) as exc:
            if raise_errors:
                raise
            self._subscribed = False
            self._set_redis_ok(False, exc)

    async def _unsubscribe(self, channels: list[str]) -> None:
        if self._pubsub is None:
            return
        try:
            if self._sharded:
                await self._pubsub.sunsubscribe(*channels)
            else:
                await self._pubsub.unsubscribe(*channels)
        except (RedisError, OSError) as exc:
            self._set_redis_ok(False, exc)

    # -- liveness ---------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval if self.healthy else PROBE_INTERVAL)
            try:
                await self._beat()
                self._set_redis_ok(True)
                if not self._synced:
                    self._resync_soon()
                await self._collect_dead_nodes()
                await self._read_peer_counts()
            except (RedisError, OSError) as exc:
                self._set_redis_ok(False, exc)

    # -- service-wide connection counts ------------------------------------------------

    def peer_connections(self) -> int:
        """TCP connections of the other live nodes, as of their last heartbeat."""
        return self._peer_connections

    def peer_hub_connections(self, hub: str) -> int:
        """Client connections of a hub on the other live nodes, as of their last heartbeat."""
        return self._peer_hub_connections.get(hub, 0)

    def _counts(self) -> bytes:
        hubs = {name: len(hub.connections) for name, hub in self.node.hubs.items()}
        return json.dumps({"total": self.local_connections(), "hubs": hubs}).encode()

    async def _read_peer_counts(self) -> None:
        others = [
            n for n in (_text(n) for n in await self.redis.smembers(NODES)) if n != self.node_id
        ]
        reports = await self.redis.mget([f"wps:count:{n}" for n in others]) if others else []
        total = 0
        hubs: dict[str, int] = {}
        for report in reports:
            if not report:
                continue  # a node that is gone (its report expires with its heartbeat)
            try:
                counts = json.loads(report)
                total += int(counts["total"])
                for hub, count in counts["hubs"].items():
                    hubs[hub] = hubs.get(hub, 0) + int(count)
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("ignoring a malformed connection count report")
        self._peer_connections, self._peer_hub_connections = total, hubs

    async def _beat(self) -> None:
        """Refresh our heartbeat key; notice if we were declared dead or Redis lost data."""
        now = time.monotonic()
        stalled = self._last_beat and now - self._last_beat > self.node_ttl
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(f"wps:node:{self.node_id}", b"1", px=int(self.node_ttl * 1000), get=True)
            pipe.set(f"wps:count:{self.node_id}", self._counts(), px=int(self.node_ttl * 1000))
            pipe.sadd(NODES, self.node_id)
            pipe.set(BOOT, _boot_value(), nx=True)
            pipe.get(BOOT)
            previous, _, _, _, boot = await pipe.execute()
        first = not self._last_beat
        self._last_beat = time.monotonic()
        self._check_boot(boot)
        if not first and (previous is None or stalled):
            # Either we stalled or Redis did (then every heartbeat expired at once): judge
            # nobody dead until all had a chance to beat again.
            self._collect_after = self._last_beat + self.node_ttl
            log.warning(
                "node %s could not beat for longer than node_ttl (%g s) and may have been "
                "declared dead: registering its connections again",
                self.node_id,
                self.node_ttl,
            )
            self._synced = False

    def _check_boot(self, boot: bytes | None) -> bool:
        """A new boot marker means Redis restarted empty: re-register, and let others too.

        Returns True when this is news (the caller's writes may not reach every node).
        """
        if boot is None or boot == self._boot:
            return False
        known, self._boot = self._boot, boot
        if known is None:
            return False  # our first look: nothing was lost that we know of
        log.warning("Redis lost its data (restarted?): registering connections again")
        self._synced = False
        created = _boot_created(boot)
        # Every live node notices within a heartbeat; until then a "not found" is unsure.
        settle = created + self.heartbeat_interval + 1.0 - time.time()
        self._settle_until = max(self._settle_until, time.monotonic() + max(0.0, settle))
        self._resync_soon()
        return True

    async def _collect_dead_nodes(self) -> None:
        if time.monotonic() < self._collect_after:
            return
        nodes = [_text(n) for n in await self.redis.smembers(NODES)]
        others = [n for n in nodes if n != self.node_id]
        if not others:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for other in others:
                pipe.exists(f"wps:node:{other}")
            alive = await pipe.execute()
        for other, is_alive in zip(others, alive, strict=True):
            if not is_alive:
                count = await self._forget_node(other)
                if count >= 0:
                    log.warning(
                        "node %s stopped answering: removed its %d connection(s)", other, count
                    )

    async def _forget_node(self, node_id: str, force: bool = False) -> int:
        """Remove a node's connections (atomically; -1 if its heartbeat came back)."""
        result = await self._scripts["forget"](args=[node_id, "1" if force else "0"])
        return int(result)

    def _resync_soon(self) -> None:
        if self._resyncing is None or self._resyncing.done():
            self._resyncing = asyncio.get_running_loop().create_task(
                self._resync(), name="redis-resync"
            )
            self._resyncing.add_done_callback(_log_failure)

    async def _resync(self) -> None:
        """After Redis came back (maybe empty) or we were declared dead: register again."""
        try:
            await self._beat()
        except (RedisError, OSError) as exc:
            self._set_redis_ok(False, exc)
            return  # the heartbeat tries again
        count = 0
        for hub in list(self.node.hubs.values()):
            for conn in list(hub.connections.values()):
                self._queue(_Op("unregister", [hub_prefix(conn.hub)], [conn.connection_id]))
                for op in self._register_ops(conn, sorted(conn.groups)):
                    self._queue(op)
                count += 1
        try:
            await self.flush()
        except ServiceUnavailable:
            return  # the heartbeat tries again
        self._synced = True
        log.info("re-registered %d connection(s) in Redis", count)

    def _set_redis_ok(self, ok: bool, exc: BaseException | None = None) -> None:
        if ok != self._redis_ok:
            if ok:
                log.info("Redis is reachable again")
            else:
                log.error("lost Redis at %s: %s", _safe_url(self.url), exc)
        self._redis_ok = ok


def _boot_value() -> str:
    return f"{secrets.token_hex(8)}:{time.time():.3f}"


def _boot_created(boot: bytes) -> float:
    try:
        return float(boot.rsplit(b":", 1)[1])
    except (IndexError, ValueError):
        return time.time()


def _encode(value: Any) -> Any:
    """Strings as UTF-8 bytes (strict: a lone surrogate is refused here, not in a batch)."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, bytes | int | float):
        return value
    raise TypeError(f"cannot send {type(value).__name__} to Redis")


def _fail(op: _Op, error: BaseException) -> None:
    if op.done is not None and not op.done.done():
        op.done.set_exception(error)


def _consume(future: asyncio.Future[None]) -> None:
    """Retrieve a result nobody waits for any more (no "never retrieved" warning)."""
    if not future.cancelled():
        future.exception()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("re-registering connections failed", exc_info=task.exception())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _mode(target: c.Target) -> list[str]:
    match target:
        case c.ToAll():
            return ["a", ""]
        case c.ToGroup(group):
            return ["g", group]
        case c.ToUser(user_id):
            return ["u", user_id]
        case c.ToConnection(connection_id):
            return ["c", connection_id]


def _unavailable(exc: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable(
        f"The cluster's Redis server is unavailable ({type(exc).__name__}); retry later.",
        code="Error.ServiceUnavailable.Redis",
    )


def _safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
