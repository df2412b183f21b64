"""The Redis engine: several ``webpubsub serve`` nodes act as one service.

Commands travel on one (sharded) pub/sub channel per hub; a node subscribes to the hubs it
has connections in, so a message costs one publish whatever the number of nodes. Membership
that REST asks about lives in Redis under ``wps:{hub}:`` keys (the braces keep one hub's keys
in one Redis Cluster slot), kept by Lua scripts so that concurrent changes stay consistent:

* ``c:<id>`` hash (node, user), ``cg:<id>`` set of its groups, ``r:<id>`` set of its roles;
* ``u:<user>`` set of connection ids, ``g:<group>`` sorted set of connection ids (paging by
  id), ``all`` set of the hub's connection ids;
* ``wps:node:<node>`` heartbeat key with a TTL, ``wps:n:<node>`` the node's ``hub\\0id``
  entries, ``wps:nodes`` the set of node ids. A node whose heartbeat expired has its entries
  removed by the first live node that notices (under a short lock).

Writes go through one ordered queue, flushed as one pipeline per loop turn; a REST call
waits for its own writes (read-your-writes), a client's join does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..core import commands as c
from ..core.connection import Connection
from ..core.errors import ServiceUnavailable
from ..core.node import Node
from ..core.roles import Permission, has_permission
from .codec import CodecError, decode_command, encode_command

log = logging.getLogger("webpubsub.engine.redis")

NODES = "wps:nodes"
MAX_QUEUED_OPS = 100_000

# Shared Lua: remove one connection and all its memberships.
_UNREGISTER_FN = """
local function unregister(p, id)
  local user = redis.call('HGET', p..'c:'..id, 'user')
  for _, g in ipairs(redis.call('SMEMBERS', p..'cg:'..id)) do
    redis.call('ZREM', p..'g:'..g, id)
  end
  redis.call('DEL', p..'cg:'..id, p..'r:'..id, p..'c:'..id)
  redis.call('SREM', p..'all', id)
  if user and user ~= '' then redis.call('SREM', p..'u:'..user, id) end
end
local function targets(p, mode, target)
  if mode == 'u' then return redis.call('SMEMBERS', p..'u:'..target) end
  if mode == 'g' then return redis.call('ZRANGE', p..'g:'..target, 0, -1) end
  if mode == 'a' then return redis.call('SMEMBERS', p..'all') end
  return {target}
end
"""

REGISTER = """
local p, id, node, user = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
redis.call('HSET', p..'c:'..id, 'node', node, 'user', user)
redis.call('SADD', p..'all', id)
if user ~= '' then redis.call('SADD', p..'u:'..user, id) end
local n = tonumber(ARGV[4])
redis.call('DEL', p..'r:'..id)
for i = 5, 4 + n do redis.call('SADD', p..'r:'..id, ARGV[i]) end
for i = 5 + n, #ARGV do
  redis.call('ZADD', p..'g:'..ARGV[i], 0, id)
  redis.call('SADD', p..'cg:'..id, ARGV[i])
end
"""

UNREGISTER = (
    _UNREGISTER_FN
    + """
unregister(KEYS[1], ARGV[1])
"""
)

CLOSE = (
    _UNREGISTER_FN
    + """
local p = KEYS[1]
local excluded = {}
for i = 3, #ARGV do excluded[ARGV[i]] = true end
for _, id in ipairs(targets(p, ARGV[1], ARGV[2])) do
  if not excluded[id] then unregister(p, id) end
end
"""
)

MEMBERSHIP = (
    _UNREGISTER_FN
    + """
local p, op, mode, target = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
for _, id in ipairs(targets(p, mode, target)) do
  if redis.call('EXISTS', p..'c:'..id) == 1 then
    if op == 'leaveall' then
      for _, g in ipairs(redis.call('SMEMBERS', p..'cg:'..id)) do
        redis.call('ZREM', p..'g:'..g, id)
      end
      redis.call('DEL', p..'cg:'..id)
    else
      for i = 4, #ARGV do
        if op == 'join' then
          redis.call('ZADD', p..'g:'..ARGV[i], 0, id)
          redis.call('SADD', p..'cg:'..id, ARGV[i])
        else
          redis.call('ZREM', p..'g:'..ARGV[i], id)
          redis.call('SREM', p..'cg:'..id, ARGV[i])
        end
      end
    end
  end
end
"""
)

ROLES = """
local p, op, id, role = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', p..'c:'..id) == 0 then return 0 end
if op == 'grant' then
  redis.call('SADD', p..'r:'..id, role)
elseif op == 'revoke' then
  redis.call('SREM', p..'r:'..id, role)
else
  for _, r in ipairs(redis.call('SMEMBERS', p..'r:'..id)) do
    if r == role or string.sub(r, 1, #role + 1) == role..'.' then
      redis.call('SREM', p..'r:'..id, r)
    end
  end
end
return 1
"""


def hub_prefix(hub: str) -> str:
    return f"wps:{{{hub}}}:"


def channel(hub: str) -> str:
    return f"wps:{{{hub}}}:commands"


@dataclass
class _Op:
    """One queued Redis operation: a script call or a plain command."""

    name: str
    keys: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)
    done: asyncio.Future[None] | None = None


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
    ) -> None:
        self.url = url
        self.node = node
        self.node_id = secrets.token_hex(6)
        self.node_ttl = node_ttl
        self.heartbeat_interval = heartbeat_interval
        self.redis = aioredis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=False
        )
        self._scripts = {
            "register": self.redis.register_script(REGISTER),
            "unregister": self.redis.register_script(UNREGISTER),
            "close": self.redis.register_script(CLOSE),
            "membership": self.redis.register_script(MEMBERSHIP),
            "roles": self.redis.register_script(ROLES),
        }
        self._sender = self.node_id.encode() + b"\n"
        self._ops: list[_Op] = []
        self._wake = asyncio.Event()
        self._channels: set[str] = set()
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sharded = False
        self.healthy = False
        self._closing = False

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (raises ServiceUnavailable when Redis is unreachable) and start serving."""
        try:
            info = await self.redis.info("server")
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(
                f"Redis at {_safe_url(self.url)} is unreachable: {exc}"
            ) from exc
        major = int(str(info.get("redis_version", "0")).split(".")[0] or 0)
        self._sharded = major >= 7
        self.healthy = True
        await self._heartbeat_once()
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._writer(), name="redis-writer"),
            loop.create_task(self._reader(), name="redis-reader"),
            loop.create_task(self._heartbeat(), name="redis-heartbeat"),
        ]
        log.info(
            "node %s joined the cluster at %s (sharded pub/sub: %s)",
            self.node_id,
            _safe_url(self.url),
            self._sharded,
        )

    async def close(self) -> None:
        """Leave the cluster: flush, remove this node's entries, stop the tasks."""
        self._closing = True
        with contextlib.suppress(RedisError, OSError, ServiceUnavailable):
            await asyncio.wait_for(self.flush(), 5)
            await asyncio.wait_for(self._forget_node(self.node_id), 5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        await self.redis.aclose()

    # -- Engine protocol (called by the node, synchronously) --------------------------

    def publish(self, hub: str, command: c.Command) -> None:
        payload = self._sender + encode_command(command)
        self._queue(_Op("spublish" if self._sharded else "publish", [channel(hub)], [payload]))

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

    async def commit(self, hub: str, command: c.Command) -> None:
        """Record a REST command's membership effect and wait until Redis has it all.

        A send changes no membership: its publish is already queued in order, so the call
        does not wait for Redis (a burst of sends then fans out together, as on one node).
        Raises ServiceUnavailable when Redis cannot be reached (REST answers 503).
        """
        ops = self._record_ops(hub, command, rest=True)
        if not ops:
            return
        for op in ops:
            self._queue(op)
        await self.flush()

    async def flush(self) -> None:
        """Wait until everything queued so far reached Redis (ServiceUnavailable if not)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue(_Op("ping", done=done))
        await done

    # -- Directory (REST queries) -------------------------------------------------------

    async def connection_exists(self, hub: str, connection_id: str) -> bool:
        return bool(await self._query("exists", hub_prefix(hub) + "c:" + connection_id))

    async def user_exists(self, hub: str, user_id: str) -> bool:
        return bool(await self._query("scard", hub_prefix(hub) + "u:" + user_id))

    async def group_exists(self, hub: str, group: str) -> bool:
        return bool(await self._query("zcard", hub_prefix(hub) + "g:" + group))

    async def group_members(
        self, hub: str, group: str, after: str | None, limit: int
    ) -> list[tuple[str, str | None]]:
        prefix = hub_prefix(hub)
        start = "(" + after if after is not None else "-"
        ids = await self._query(
            "zrange", prefix + "g:" + group, start, "+", bylex=True, offset=0, num=limit
        )
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

    async def _query(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return await getattr(self.redis, name)(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise _unavailable(exc) from exc

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

    # -- the writer: one ordered pipeline per loop turn ----------------------------------

    def _queue(self, op: _Op) -> None:
        if len(self._ops) >= MAX_QUEUED_OPS:
            log.error("dropping Redis writes: %d queued while Redis is unreachable", len(self._ops))
            if op.done is not None:
                op.done.set_exception(ServiceUnavailable("The cluster's Redis queue is full."))
            return
        self._ops.append(op)
        self._wake.set()

    async def _writer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            ops, self._ops = self._ops, []
            if not ops:
                continue
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for op in ops:
                        await self._add(pipe, op)
                    await pipe.execute()
            except (RedisError, OSError) as exc:
                self._set_healthy(False, exc)
                for op in ops:
                    if op.done is not None and not op.done.done():
                        op.done.set_exception(_unavailable(exc))
                continue
            self._set_healthy(True)
            for op in ops:
                if op.done is not None and not op.done.done():
                    op.done.set_result(None)

    async def _add(self, pipe: Any, op: _Op) -> None:
        script = self._scripts.get(op.name)
        if script is not None:
            # Inside a pipeline this only queues EVALSHA (scripts load on NOSCRIPT).
            await script(keys=op.keys, args=op.args, client=pipe)
        elif op.name == "ping":
            pipe.ping()
        else:
            getattr(pipe, op.name)(*op.keys, *op.args)

    # -- the reader: commands from the other nodes -------------------------------------

    async def _reader(self) -> None:
        delay = 0.1
        while not self._closing:
            try:
                self._pubsub = self.redis.pubsub()
                if self._channels:
                    await self._subscribe(list(self._channels))
                else:
                    # Keep the connection open even before the first hub appears.
                    await self._pubsub.subscribe("wps:control")
                if not self.healthy:
                    await self._resync()
                delay = 0.1
                while True:
                    message = await self._pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=1.0
                    )
                    if message is not None:
                        self._deliver(message)
            except (RedisError, OSError, ServiceUnavailable) as exc:
                self._set_healthy(False, exc)
                with contextlib.suppress(Exception):
                    await self._pubsub.aclose()
                self._pubsub = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _deliver(self, message: dict[str, Any]) -> None:
        data: bytes = message.get("data") or b""
        if not isinstance(data, bytes) or data.startswith(self._sender):
            return  # our own command: already applied locally
        raw_channel = message.get("channel", b"")
        name = raw_channel.decode() if isinstance(raw_channel, bytes) else str(raw_channel)
        if not (name.startswith("wps:{") and name.endswith("}:commands")):
            return
        hub = name[len("wps:{") : -len("}:commands")]
        _, _, body = data.partition(b"\n")
        try:
            command = decode_command(body)
        except CodecError as exc:
            log.warning("ignoring a malformed command on %s: %s", name, exc)
            return
        self.node.apply(hub, command)

    async def _subscribe(self, channels: list[str]) -> None:
        if self._pubsub is None:
            return
        try:
            if self._sharded:
                await self._pubsub.ssubscribe(*channels)
            else:
                await self._pubsub.subscribe(*channels)
        except (RedisError, OSError) as exc:
            self._set_healthy(False, exc)

    async def _unsubscribe(self, channels: list[str]) -> None:
        if self._pubsub is None:
            return
        try:
            if self._sharded:
                await self._pubsub.sunsubscribe(*channels)
            else:
                await self._pubsub.unsubscribe(*channels)
        except (RedisError, OSError) as exc:
            self._set_healthy(False, exc)

    # -- liveness ---------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                await self._heartbeat_once()
                await self._collect_dead_nodes()
            except (RedisError, OSError) as exc:
                self._set_healthy(False, exc)

    async def _heartbeat_once(self) -> None:
        ttl_ms = int(self.node_ttl * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(f"wps:node:{self.node_id}", b"1", px=ttl_ms)
            pipe.sadd(NODES, self.node_id)
            await pipe.execute()

    async def _collect_dead_nodes(self) -> None:
        nodes = [_text(n) for n in await self.redis.smembers(NODES)]
        others = [n for n in nodes if n != self.node_id]
        if not others:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for other in others:
                pipe.exists(f"wps:node:{other}")
            alive = await pipe.execute()
        for other, is_alive in zip(others, alive, strict=True):
            if is_alive:
                continue
            if await self.redis.set(f"wps:gc:{other}", self.node_id, nx=True, ex=30):
                count = await self._forget_node(other)
                log.warning("node %s stopped answering: removed its %d connection(s)", other, count)

    async def _forget_node(self, node_id: str) -> int:
        entries = await self.redis.smembers(f"wps:n:{node_id}")
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry in entries:
                hub, _, connection_id = _text(entry).partition("\0")
                await self._scripts["unregister"](
                    keys=[hub_prefix(hub)], args=[connection_id], client=pipe
                )
            pipe.delete(f"wps:n:{node_id}", f"wps:node:{node_id}")
            pipe.srem(NODES, node_id)
            await pipe.execute()
        return len(entries)

    async def _resync(self) -> None:
        """After Redis came back (maybe empty): re-register this node's connections."""
        await self._heartbeat_once()
        count = 0
        for hub in list(self.node.hubs.values()):
            for conn in list(hub.connections.values()):
                self._queue(_Op("unregister", [hub_prefix(conn.hub)], [conn.connection_id]))
                for op in self._register_ops(conn, sorted(conn.groups)):
                    self._queue(op)
                count += 1
        await self.flush()
        self._set_healthy(True)
        log.info("re-registered %d connection(s) after reconnecting to Redis", count)

    def _set_healthy(self, healthy: bool, exc: BaseException | None = None) -> None:
        if healthy != self.healthy:
            if healthy:
                log.info("Redis is reachable again")
            else:
                log.error("lost Redis at %s: %s", _safe_url(self.url), exc)
        self.healthy = healthy


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
