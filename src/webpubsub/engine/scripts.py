"""The Lua scripts that keep shared membership consistent in Redis (see ``redis.py``).

Each runs atomically, so concurrent changes from several nodes never leave a connection half
registered, and a dead node's connections are removed in one step that a node coming back to
life cannot interleave with.
"""

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

# Remove a node's connections, unless its heartbeat came back meanwhile (atomic, so a node
# resuming from a stall and re-registering cannot lose its fresh entries to a collector).
FORGET_NODE = (
    _UNREGISTER_FN
    + """
local node, force = ARGV[1], ARGV[2]
if force ~= '1' and redis.call('EXISTS', 'wps:node:'..node) == 1 then return -1 end
local entries = redis.call('SMEMBERS', 'wps:n:'..node)
for _, entry in ipairs(entries) do
  local sep = string.find(entry, '\\0', 1, true)
  if sep then
    unregister('wps:{'..string.sub(entry, 1, sep - 1)..'}:', string.sub(entry, sep + 1))
  end
end
redis.call('DEL', 'wps:n:'..node, 'wps:node:'..node, 'wps:count:'..node)
redis.call('SREM', 'wps:nodes', node)
return #entries
"""
)
