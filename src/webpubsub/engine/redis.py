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

With a ``redis+sentinel://`` URL the client follows the master that Sentinel names (asked
again on every heartbeat: a demoted master takes writes until Sentinel reconfigures it). A
failover is noticed as a new master address after any round trip; it is treated like a
restart (the promoted replica may lack the last writes, and nobody is subscribed there): every
node registers again, holds its publishes for ``heartbeat_interval`` + ``timeout`` + 1 s,
replays before them the publishes it wrote for as long before, and moves a reader still
subscribed to the former master (a hung master breaks no connection).

Every long-lived task is supervised: an unexpected exception is logged with its traceback,
the node reports not ready, and the task starts again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..core import commands as c
from ..core.connection import Connection
from ..core.errors import ServiceUnavailable
from ..core.handover import HandoverError, from_fields, to_fields
from ..core.node import Node, RecoveryRefused
from ..core.roles import Permission, has_permission
from .codec import CodecError, decode_command, encode_command
from .handover import (
    MOVE_PREFIX,
    REQUEST,
    SNAPSHOT_TTL,
    Adoption,
    MoveAnswer,
    MoveRequest,
    PendingMove,
    decode_move,
    snapshot_key,
)
from .redis_url import is_sentinel_url, parse_sentinel_url
from .scripts import CLOSE, FORGET_NODE, MEMBERSHIP, REGISTER, ROLES, UNREGISTER

log = logging.getLogger("webpubsub.engine.redis")

NODES = "wps:nodes"
BOOT = "wps:boot"
CONTROL = "wps:control"  # every node subscribes (see _hold)
RPC_PREFIX = "wps:rpc:"  # + node id: calls to that node's app-server tunnels, and answers
MAX_QUEUED_OPS = 100_000
PUBLISH = frozenset({"publish", "spublish"})
MAX_SENDERS = 10_000  # node ids whose last sequence number we remember
RETRY_DELAYS = (0.05, 0.1, 0.2, 0.5)  # between attempts at a failed batch
PROBE_INTERVAL = 0.2  # how often an unhealthy node tries Redis again
READER_POLL = 0.25  # how soon the reader notices it must reconnect
MAX_RECENT = 100_000
MAX_RECENT_BYTES = 64 * 1024 * 1024
# Connections to Redis: reads (REST queries, recoveries) take at most MAX_READS at once and
# wait for one beyond that, so that a storm of them cannot starve the writer, the reader and
# the heartbeat (redis-py's pool refuses at once when it is out of connections).
POOL_SIZE = 100
MAX_READS = 64


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


@dataclass(slots=True, frozen=True)
class _Peer:
    """Another node as its heartbeat shows it."""

    node: str
    alive: bool
    report: bytes | None  # its connection counts (JSON), None once expired


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
        self.timeout = timeout
        # A pooled connection left stale by a Redis restart is replaced and the call tried
        # again, instead of failing the first caller (and marking the node unhealthy).
        self.redis, self._sentinel = _client(url, timeout)
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
        # Reliable connections on their way here from another node, by hub and id.
        self._moves: dict[str, dict[str, PendingMove]] = {}
        self._reads = asyncio.Semaphore(MAX_READS)
        self._ops: list[_Op] = []
        self._wake = asyncio.Event()
        self._channels: set[str] = set()  # hub channels we want
        self._confirmed: set[str] = set()  # hub channels Redis confirmed on this connection
        self._listeners: dict[str, asyncio.Future[None]] = {}
        # Connections whose registration is not in Redis yet: the future of its last write.
        self._registering: dict[str, asyncio.Future[None]] = {}
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
        # With Sentinel: the master we last wrote to; a new one means a failover happened.
        self._master: Any = None
        self._replay = False  # send the recent publishes again (a failover: some may be lost)
        self._recent: collections.deque[tuple[float, _Op]] = collections.deque()
        self._recent_bytes = 0
        # Publishes written this long before we notice a failover may have gone to the former
        # master (a demoted master takes writes until Sentinel reconfigures it)...
        self._recent_window = heartbeat_interval + timeout + 1.0
        # ... and so may every publish since the sentinels last named our master to us: a
        # node whose questions to them time out (a loaded machine) can go on writing to a
        # former master for seconds while the others listen on the new one.
        self._confirmed_at = time.monotonic()
        self._reader_stale = False  # its connection is on a former master: reconnect
        # App-server tunnels (server/tunnel.py): ours go out with the heartbeat report, the
        # other nodes' are read from theirs; calls to a tunnel on another node travel on
        # that node's RPC channel, answers on ours.
        self.tunnel_subs: Callable[[], dict[str, list[str]]] = dict
        self.on_rpc: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None
        self._rpc_channel = RPC_PREFIX + self.node_id
        self._tunnel_holders: dict[str, dict[str, str]] = {}  # hub -> sub -> node
        self._hub_nodes: dict[str, set[str]] = {}  # hub -> the other nodes with its clients
        self._rpc_calls: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._rpc_next = 0
        self._rpc_tasks: set[asyncio.Task[None]] = set()

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
                f"Redis at {_safe_url(self.url)} is unreachable: {self._describe(exc)}"
            ) from exc
        self._master = self._master_address()
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
            "node %s joined the cluster at %s (sharded pub/sub: %s%s)",
            self.node_id,
            _safe_url(self.url),
            self._sharded,
            f", master {_address(self._master)}" if self._master else "",
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
        if self._sentinel is not None:
            with contextlib.suppress(Exception):
                await self._sentinel.aclose()

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
        moves = self._moves.get(hub)
        if moves:
            for move in moves.values():
                move.own(self._sender, self._sequence, command)

    def _publish_op(self, hub: str, command: c.Command) -> _Op:
        return self._publish_body(hub, encode_command(command))

    def _publish_body(self, hub: str, body: bytes) -> _Op:
        self._sequence += 1
        head = self._sender + b" " + str(self._sequence).encode() + b"\n"
        return _Op("spublish" if self._sharded else "publish", [channel(hub)], [head + body])

    def record_soon(self, hub: str, command: c.Command) -> None:
        for op in self._record_ops(hub, command):
            self._queue(op)

    def connection_added(self, conn: Connection, groups: Iterable[str]) -> None:
        ops = self._register_ops(conn, groups)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ops[-1].done = done
        self._registering[conn.connection_id] = done
        done.add_done_callback(functools.partial(self._registered, conn.connection_id))
        for op in ops:
            self._queue(op)

    def _registered(self, connection_id: str, done: asyncio.Future[None]) -> None:
        if self._registering.get(connection_id) is done:
            del self._registering[connection_id]
        _consume(done)

    async def registered(self, connection_id: str) -> None:
        done = self._registering.get(connection_id)
        if done is None:
            return
        # Bounded like a REST write: past it (Redis unreachable) the event goes anyway,
        # late rather than never; the writer retries the registration meanwhile.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(done), self.publish_timeout)

    def connection_removed(self, conn: Connection) -> None:
        self._queue(_Op("unregister", [hub_prefix(conn.hub)], [conn.connection_id]))
        self._queue(_Op("srem", [f"wps:n:{self.node_id}"], [f"{conn.hub}\0{conn.connection_id}"]))

    def hub_added(self, hub: str) -> None:
        name = channel(hub)
        if name in self._channels:
            return  # already subscribed, or on the way (see listening)
        self._channels.add(name)
        if self._pubsub is not None:
            asyncio.get_running_loop().create_task(self._subscribe([name]))

    def hub_removed(self, hub: str) -> None:
        name = channel(hub)
        self._channels.discard(name)
        self._confirmed.discard(name)
        if self._pubsub is not None:
            asyncio.get_running_loop().create_task(self._unsubscribe([name]))

    def listening(self, hub: str) -> asyncio.Future[None] | None:
        """None when this node receives the hub's commands already; else a future resolved
        when Redis confirms the subscription (starting it if need be).

        A client is told it is connected only then: before, a send to its group through
        another node would be accepted and never reach it.
        """
        name = channel(hub)
        if name in self._confirmed:
            return None
        waiter = self._listeners.get(name)
        if waiter is None or waiter.done():
            waiter = self._listeners[name] = asyncio.get_running_loop().create_future()
        self.hub_added(hub)
        return waiter

    def _confirm(self, name: str) -> None:
        if name not in self._channels:
            return  # unsubscribed meanwhile
        self._confirmed.add(name)
        waiter = self._listeners.pop(name, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

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
                "The cluster is re-registering its connections after a Redis restart or "
                "failover; retry in a second.",
                code="Error.ServiceUnavailable.Resync",
            )

    # -- Directory (REST queries) -------------------------------------------------------

    # A connection this node holds exists, whatever Redis says yet: its registration is
    # written behind the handshake, and an app server that adds a client to a group right
    # after it connected (through this node) must not hear 404. This node is the authority
    # on its own connections; others' are Redis's.

    async def connection_exists(self, hub: str, connection_id: str) -> bool:
        self.check_ready()
        if self.node.connection_exists(hub, connection_id):
            return True
        found = bool(await self._query("exists", hub_prefix(hub) + "c:" + connection_id))
        return found or self._negative()

    async def user_exists(self, hub: str, user_id: str) -> bool:
        self.check_ready()
        if self.node.user_exists(hub, user_id):
            return True
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
            async with self._reads, self.redis.pipeline(transaction=False) as pipe:
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
            async with self._reads, self.redis.pipeline(transaction=False) as pipe:
                pipe.set(BOOT, _boot_value(), nx=True)
                pipe.get(BOOT)
                getattr(pipe, name)(*args, **kwargs)
                _, boot, result = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc
        self._check_boot(boot)
        self._check_master()
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
            # The pool may already know of a new master (our reader or heartbeat found it):
            # notice before writing, so that the publishes to replay go first.
            self._check_master()
            if time.monotonic() < self._settle_until:
                # Redis restarted empty or failed over: until every node is subscribed again,
                # what we publish could miss some of them. Hold it all, in order.
                await self._hold()
            batch = [op for op in self._ops if not op.cancelled]
            self._ops = []
            if self._replay:
                # Publishes written to the former master just before it failed may not have
                # reached every subscriber: send them again, before anything newer (the
                # receivers drop what they already applied, by sequence number).
                self._replay = False
                recent = [op for _, op in self._recent]
                self._recent.clear()
                self._recent_bytes = 0
                batch = recent + batch
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
            news = self._check_boot(boot)
            news = self._check_master() or news
            now = time.monotonic()
            if news or now < self._settle_until:
                # Written into a Redis that had just restarted empty or been promoted,
                # perhaps before every node subscribed again: publish it once more when they
                # all have (receivers drop the copies they already applied, by sequence).
                self._ops = [op for op in batch if op.name in PUBLISH] + self._ops
                self._wake.set()
            elif self._sentinel is not None:
                self._remember(now, batch)
            for op in batch:
                if op.done is not None and not op.done.done():
                    op.done.set_result(None)

    def _remember(self, now: float, batch: list[_Op]) -> None:
        """Keep the publishes a failover might have lost, to replay them once noticed: those
        of the last ``_recent_window`` and those since the sentinels last confirmed our
        master (with that margin), at most MAX_RECENT of them and MAX_RECENT_BYTES."""
        recent = self._recent
        for op in batch:
            if op.name in PUBLISH:
                recent.append((now, op))
                self._recent_bytes += _op_size(op)
        horizon = min(now, self._confirmed_at) - self._recent_window
        while recent and (
            recent[0][0] < horizon
            or len(recent) > MAX_RECENT
            or self._recent_bytes > MAX_RECENT_BYTES
        ):
            self._recent_bytes -= _op_size(recent.popleft()[1])

    async def _hold(self) -> None:
        """Wait out the settle time, then until every live node listens on this master.

        The settle time gives every live node a heartbeat to notice and re-register; a node
        slowed down (a loaded machine) may still not have subscribed again then, so the hold
        goes on until the control channel's subscribers on the master number the live nodes,
        ``node_ttl`` at most (a node silent that long is being declared dead anyway).
        """
        await asyncio.sleep(max(0.0, self._settle_until - time.monotonic()))
        ceiling = time.monotonic() + self.node_ttl
        while time.monotonic() < ceiling:
            try:
                if await self._everyone_listens():
                    return
            except (RedisError, OSError):
                return  # the write that follows fails and is retried as usual
            await asyncio.sleep(PROBE_INTERVAL / 4)
        log.warning("not every node subscribed again within node_ttl; publishing anyway")

    async def _everyone_listens(self) -> bool:
        live = 1 + sum(1 for other in await self._others() if other.alive)  # we listen
        numsub = await self.redis.pubsub_numsub(CONTROL)
        return (int(numsub[0][1]) if numsub else 0) >= live

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
                elif op.name == "hsetall":
                    pipe.hset(
                        op.keys[0], mapping=dict(zip(op.args[::2], op.args[1::2], strict=True))
                    )
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
                self._confirmed.clear()
                if self._channels:
                    await self._subscribe(list(self._channels), raise_errors=True)
                # Every node is on the control channel, hubs or not: its subscriber count on
                # the master tells a publisher that every node listens again (see _hold).
                # Last, so that once Redis counts it, the hub channels before it are taken.
                await self._pubsub.subscribe(self._rpc_channel)
                await self._pubsub.subscribe(CONTROL)
                self._subscribed = True
                self._first_subscription.set()
                if not self._synced:
                    self._resync_soon()
                delay = 0.05
                self._reader_stale = False
                while True:
                    message = await self._pubsub.get_message(timeout=READER_POLL)
                    if message is None:
                        pass
                    elif message.get("type") in ("subscribe", "ssubscribe"):
                        self._confirm(_text(message.get("channel") or b""))
                    elif message.get("type") in ("message", "smessage"):
                        self._deliver(message)
                    if self._reader_stale:
                        raise RedisConnectionError("subscribed to a former master")
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
        raw_channel = message.get("channel", b"")
        name = raw_channel.decode("utf-8", "replace") if isinstance(raw_channel, bytes) else ""
        if name == self._rpc_channel:
            self._rpc_message(data)
            return
        head, _, body = data.partition(b"\n")
        sender, _, raw_sequence = head.partition(b" ")
        if not (name.startswith("wps:{") and name.endswith("}:commands")):
            return
        if sender == self._sender:
            if self._moves and body.startswith(REQUEST):
                self._request_echoed(name[len("wps:{") : -len("}:commands")], body)
            return  # our own command: already applied locally
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
        if body.startswith(MOVE_PREFIX):
            self._move_message(hub, sender, body)
            return
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
        moves = self._moves.get(hub)
        if moves:
            for move in moves.values():
                move.remote(sender, sequence, command)

    # -- moving a reliable connection here from the node that holds it (handover.py) -----

    async def take_over(
        self, hub: str, connection_id: str, token: str, subprotocol: str
    ) -> Adoption:
        """Ask the node holding a detached reliable connection to hand it over.

        Raises RecoveryRefused (the client must stop) or ServiceUnavailable (it may retry).
        Once this returns, call :meth:`finish_move` and adopt in the same step.
        """
        waiter = self.listening(hub)
        if waiter is not None:
            try:
                await asyncio.wait_for(asyncio.shield(waiter), self.publish_timeout)
            except TimeoutError:
                raise ServiceUnavailable("The cluster did not answer in time.") from None
        prefix = hub_prefix(hub)
        holder = await self._query("hget", prefix + "c:" + connection_id, "node")
        if holder is None or holder.decode() == self.node_id:
            raise RecoveryRefused("The connection cannot be recovered: it no longer exists.")
        if not await self._query("exists", f"wps:node:{holder.decode()}"):
            # Its node died: what it held is gone (its entries are being removed).
            raise RecoveryRefused("The connection cannot be recovered: its node stopped.")
        moves = self._moves.setdefault(hub, {})
        if connection_id in moves:
            raise ServiceUnavailable("The connection is being recovered already.")
        request = MoveRequest(connection_id, token, subprotocol, holder.decode(), self.node_id)
        answered: asyncio.Future[MoveAnswer] = asyncio.get_running_loop().create_future()
        move = PendingMove(hub, request, holder, answer=answered)
        moves[connection_id] = move
        try:
            self._queue(self._publish_body(hub, request.encode()))
            try:
                answer = await asyncio.wait_for(asyncio.shield(answered), self.publish_timeout)
            except TimeoutError:
                raise ServiceUnavailable(
                    "The node holding the connection did not answer in time."
                ) from None
            if not answer.ok:
                raise RecoveryRefused(
                    f"The connection cannot be recovered: {answer.reason}.", answer.reason
                )
            key = snapshot_key(prefix, connection_id)
            fields = await self._query("hgetall", key)
            self._queue(_Op("delete", [key]))
            try:
                snapshot = from_fields(fields)
            except HandoverError as exc:
                log.error("could not read the snapshot of %s: %s", connection_id, exc)
                raise RecoveryRefused("The connection cannot be recovered: it was lost.") from None
            return Adoption(snapshot, move, answer.mark)
        except BaseException:
            self._drop_move(hub, connection_id)
            raise

    def finish_move(self, adoption: Adoption) -> list[c.Command]:
        """The commands the adopted snapshot lacks; from here on the connection is ours."""
        self._drop_move(adoption.pending.hub, adoption.snapshot.connection_id)
        return adoption.commands()

    def _drop_move(self, hub: str, connection_id: str) -> None:
        moves = self._moves.get(hub)
        if moves is not None:
            moves.pop(connection_id, None)
            if not moves:
                del self._moves[hub]

    def _request_echoed(self, hub: str, body: bytes) -> None:
        request = decode_move(body)
        move = self._moves.get(hub, {}).get(request.connection_id) if request else None
        if move is not None and move.request == request:
            move.echoed = True

    def _move_message(self, hub: str, sender: bytes, body: bytes) -> None:
        message = decode_move(body)
        if isinstance(message, MoveRequest) and message.holder == self.node_id:
            self._hand_over(hub, message)
        elif isinstance(message, MoveAnswer) and message.requester == self.node_id:
            move = self._moves.get(hub, {}).get(message.connection_id)
            if move is not None and move.answer is not None and not move.answer.done():
                move.answer.set_result(message)
            elif message.ok:
                log.warning(
                    "connection %s was handed over after its recovery here gave up; it is lost",
                    message.connection_id,
                )

    def _hand_over(self, hub: str, request: MoveRequest) -> None:
        """Another node's client came back for a connection held here: write its snapshot
        and let go of it, or say why not."""
        conn = self.node.find_connection(hub, request.connection_id)
        if conn is None:
            reason = "it no longer exists"
        else:
            reason = conn.prepare_move(request.token, request.subprotocol)
        if conn is None or reason:
            answer = MoveAnswer(request.connection_id, request.requester, False, reason)
            self._queue(self._publish_body(hub, answer.encode()))
            return
        snapshot = self.node.release(conn, asyncio.get_running_loop().time())
        mark = self._sequence  # our publishes up to here were applied to it already
        key = snapshot_key(hub_prefix(hub), request.connection_id)
        fields: list[Any] = []
        for name, value in to_fields(snapshot).items():
            fields += [name, value]
        self._queue(_Op("hsetall", [key], fields))
        self._queue(_Op("expire", [key], [SNAPSHOT_TTL]))
        self._queue(_Op("srem", [f"wps:n:{self.node_id}"], [f"{hub}\0{request.connection_id}"]))
        answer = MoveAnswer(request.connection_id, request.requester, True, mark=mark)
        self._queue(self._publish_body(hub, answer.encode()))
        log.info("handing connection %s over to node %s", conn.connection_id, request.requester)

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
            await self._ask_sentinels()
            try:
                await self._beat()
                self._set_redis_ok(True)
                if not self._synced:
                    self._resync_soon()
                others = await self._others()
                await self._collect_dead_nodes(others)
                self._count_peers(others)
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
        report: dict[str, Any] = {"total": self.local_connections(), "hubs": hubs}
        tunnels = self.tunnel_subs()
        if tunnels:
            report["tunnels"] = tunnels
        return json.dumps(report).encode()

    def _count_peers(self, others: list[_Peer]) -> None:
        total = 0
        hubs: dict[str, int] = {}
        holders: dict[str, dict[str, str]] = {}
        hub_nodes: dict[str, set[str]] = {}
        for other in others:
            if not other.report:
                continue  # a node that is gone (its report expires with its heartbeat)
            try:
                counts = json.loads(other.report)
                total += int(counts["total"])
                for hub, count in counts["hubs"].items():
                    hubs[hub] = hubs.get(hub, 0) + int(count)
                    if int(count):
                        hub_nodes.setdefault(str(hub), set()).add(other.node)
                for hub, subs in (counts.get("tunnels") or {}).items():
                    for sub in subs:
                        holders.setdefault(str(hub), {})[str(sub)] = other.node
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("ignoring a malformed connection count report from %s", other.node)
        self._peer_connections, self._peer_hub_connections = total, hubs
        self._tunnel_holders = holders
        self._hub_nodes = hub_nodes

    # -- app-server tunnels on other nodes (server/tunnel.py) ----------------------------

    def nodes_with(self, hub: str) -> list[str]:
        """The other live nodes with connections of ``hub``, as of the last heartbeats."""
        return sorted(self._hub_nodes.get(hub, ()))

    def tunnel_holders(self, hub: str) -> dict[str, str]:
        """The app servers (``sub``) with a tunnel for ``hub`` on another live node, and that
        node, as of the last heartbeats."""
        return self._tunnel_holders.get(hub.lower(), {})

    async def rpc(self, node: str, call: dict[str, Any]) -> dict[str, Any]:
        """Have ``node`` run ``call`` on its tunnels; its answer (the caller bounds the wait).

        Raises ServiceUnavailable when Redis cannot take the call.
        """
        self._rpc_next += 1
        call_id = self._rpc_next
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._rpc_calls[call_id] = future
        try:
            message = {**call, "t": "q", "id": call_id, "from": self.node_id}
            try:
                await self.redis.publish(RPC_PREFIX + node, json.dumps(message))
            except (RedisError, OSError) as exc:
                raise _unavailable(exc) from exc
            return await future
        finally:
            self._rpc_calls.pop(call_id, None)

    def _rpc_message(self, data: bytes) -> None:
        try:
            message = json.loads(data)
            kind, call_id = message["t"], int(message["id"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed tunnel call on %s", self._rpc_channel)
            return
        if kind == "a":
            future = self._rpc_calls.get(call_id)
            if future is not None and not future.done():
                future.set_result(message)
        elif kind == "q" and self.on_rpc is not None:
            task = asyncio.get_running_loop().create_task(self._rpc_answer(message))
            self._rpc_tasks.add(task)
            task.add_done_callback(self._rpc_tasks.discard)

    async def _rpc_answer(self, call: dict[str, Any]) -> None:
        assert self.on_rpc is not None
        try:
            answer = await self.on_rpc(call)
        except Exception:
            log.exception("a tunnel call from node %s failed", call.get("from"))
            answer = {"error": "internal", "message": "the call failed on the tunnel's node"}
        answer.update(t="a", id=call["id"])
        with contextlib.suppress(RedisError, OSError):
            await self.redis.publish(RPC_PREFIX + str(call.get("from")), json.dumps(answer))

    async def _others(self) -> list[_Peer]:
        """The other nodes in one round trip: is their heartbeat alive, what they count."""
        nodes = [_text(n) for n in await self.redis.smembers(NODES)]
        others = [n for n in nodes if n != self.node_id]
        if not others:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for other in others:
                pipe.exists(f"wps:node:{other}")
                pipe.get(f"wps:count:{other}")
            replies = await pipe.execute()
        return [
            _Peer(other, bool(replies[2 * i]), replies[2 * i + 1]) for i, other in enumerate(others)
        ]

    async def _ask_sentinels(self) -> None:
        """With Sentinel, ask which master is current (a former master that is still up keeps
        taking writes until Sentinel demotes it, seconds later: nothing else would tell us).
        A new answer makes the pool drop its idle connections; in-use ones go when released.
        """
        if self._sentinel is None:
            return
        pool: Any = self.redis.connection_pool
        asked = time.monotonic()
        try:
            # Bounded: hung sentinels must not delay our heartbeat past node_ttl.
            limit = min(self.timeout, self.heartbeat_interval)
            address = await asyncio.wait_for(pool.get_master_address(), limit)
            if self._master is not None and tuple(address) == tuple(self._master):
                self._confirmed_at = asked  # what we wrote before went where all listen
        except (RedisError, OSError, TimeoutError) as exc:
            # The master may be fine all the same: the beat that follows tells.
            log.debug("no sentinel named the master: %s", self._describe(exc))

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
        self._check_master()
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
        self._unsettle(_boot_created(boot))
        return True

    def _check_master(self) -> bool:
        """With Sentinel, a new master means a failover: treated like a restart.

        The promoted replica has the data, the boot marker included, but maybe not the
        last writes (replication is asynchronous), and no subscriptions: every node
        registers its connections again, holds its publishes until all had time to
        subscribe to the new master, and replays the publishes it wrote just before.
        Returns True when this is news.
        """
        if self._sentinel is None:
            return False
        address = self._master_address()
        if address is None or address == self._master:
            return False
        known, self._master = self._master, address
        if known is None:
            return False
        log.warning(
            "Redis failed over from %s to %s: registering connections again",
            _address(known),
            _address(address),
        )
        self._replay = True
        self._wake.set()
        pubsub = self._pubsub
        connection = getattr(pubsub, "connection", None) if pubsub is not None else None
        if connection is not None and (connection.host, connection.port) != tuple(address):
            self._reader_stale = True  # still on the former master (a partition?)
        # Every node notices within a heartbeat and a timed-out call (a hung master is only
        # noticed by timing out), then subscribes to the new master.
        self._unsettle(time.time() + self.timeout)
        return True

    def _describe(self, exc: BaseException | None) -> str:
        """An error for people (redis-py's Sentinel errors list whole client reprs)."""
        if isinstance(exc, MasterNotFoundError) and self._sentinel is not None:
            target = parse_sentinel_url(self.url)
            hosts = ", ".join(f"{h}:{p}" for h, p in target.sentinels)
            return (
                f"no sentinel ({hosts}) names a master for {target.service_name!r}: "
                "unreachable, not monitoring that service, or the master is down"
            )
        return str(exc)

    def _master_address(self) -> Any:
        """The master's address the Sentinel pool connects to (None without Sentinel)."""
        if self._sentinel is None:
            return None
        return getattr(self.redis.connection_pool, "master_address", None)

    def _unsettle(self, since: float) -> None:
        """Redis lost writes at ``since`` (wall clock): register again, let others too."""
        self._synced = False
        # Every live node notices within a heartbeat; until then a "not found" is unsure.
        settle = since + self.heartbeat_interval + 1.0 - time.time()
        self._settle_until = max(self._settle_until, time.monotonic() + max(0.0, settle))
        # Heartbeats lapsed meanwhile (a failover takes seconds): judge nobody dead until
        # every node had node_ttl to beat again.
        self._collect_after = max(self._collect_after, self._settle_until + self.node_ttl)
        self._resync_soon()

    async def _collect_dead_nodes(self, others: list[_Peer]) -> None:
        if time.monotonic() < self._collect_after:
            return
        for other in others:
            if not other.alive:
                count = await self._forget_node(other.node)
                if count >= 0:
                    log.warning(
                        "node %s stopped answering: removed its %d connection(s)",
                        other.node,
                        count,
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
                log.error("lost Redis at %s: %s", _safe_url(self.url), self._describe(exc))
        self._redis_ok = ok


class SentinelMasterPool(SentinelConnectionPool):
    """A master pool that never hands out a connection to a former master.

    redis-py's asyncio pool (8.1) drops its idle connections when the sentinels name a new
    master, but a connection in use at that moment goes back to the pool still connected to
    the old one, and is handed out again: after a ``SENTINEL FAILOVER`` (the former master
    alive and writable for seconds) a node's reader re-subscribed there, or its writer
    published there, while the other nodes had moved, and their messages were lost between
    them. A connection released to the wrong address is closed; it reconnects to the
    current master when next used.
    """

    async def release(self, connection: Any) -> None:
        master = self.master_address
        if (
            self.is_master
            and master is not None
            and connection.is_connected
            and (connection.host, connection.port) != tuple(master)
        ):
            await connection.disconnect()
        await super().release(connection)


class _Sentinel(Sentinel):
    """Sentinel asking every sentinel at once, the newest configuration winning.

    redis-py takes the first sentinel that names a master in a good state; right after a
    failover a sentinel that has not heard of it yet still names the former master (alive,
    if it was demoted or cut off), and the nodes could go back to it. The master with the
    highest ``config-epoch`` is the one the sentinels agree on last.
    """

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        async def ask(sentinel: aioredis.Redis) -> Any:
            try:
                masters: Any = await sentinel.sentinel_masters()
                return masters.get(service_name)
            except (RedisConnectionError, RedisTimeoutError, ResponseError, OSError):
                return None

        states = await asyncio.gather(*(ask(s) for s in self.sentinels))
        good = [st for st in states if st and self.check_master_state(st, service_name)]
        if not good:
            raise MasterNotFoundError(f"No master found for {service_name!r}")
        best = max(good, key=lambda st: int(st.get("config-epoch", 0)))
        return best["ip"], int(best["port"])


def _client(url: str, timeout: float) -> tuple[aioredis.Redis, Sentinel | None]:
    """The engine's Redis client: from a URL, or following the master Sentinel names."""
    # Only a broken connection is retried: a timeout (a stalled Redis) must fail after
    # ``timeout``, so that the node reports it instead of waiting it out.
    retry = Retry(
        ExponentialBackoff(cap=0.2, base=0.02), 2, supported_errors=(RedisConnectionError,)
    )
    if not is_sentinel_url(url):
        client = aioredis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=False,
            retry=retry,
            max_connections=POOL_SIZE,
        )
        return client, None
    target = parse_sentinel_url(url)
    sentinel = _Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        sentinel_kwargs={
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "username": target.sentinel_username,
            "password": target.sentinel_password,
            "ssl": target.ssl,
            # A dead sentinel is skipped at once: the next one is asked.
            "retry": Retry(ExponentialBackoff(cap=0.05, base=0.01), 0),
        },
    )
    # A write to a demoted master (READONLY) makes the connection ask the sentinels again
    # and raise ConnectionError: retried here, then by the writer.
    client = sentinel.master_for(
        target.service_name,
        redis_class=aioredis.Redis,
        connection_pool_class=SentinelMasterPool,
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.ssl,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=False,
        retry=retry,
        max_connections=POOL_SIZE,
    )
    return client, sentinel


def _address(address: Any) -> str:
    host, port = address
    return f"{_text(host)}:{port}"


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


def _op_size(op: _Op) -> int:
    return sum(len(arg) for arg in op.args if isinstance(arg, bytes))


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
    """The URL without its passwords (in the user info or the query), for logs."""
    url = url.partition("?")[0]
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
