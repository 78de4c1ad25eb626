-- fetch: lease up to N ready tasks of one queue to a worker, atomically.
--
-- KEYS[1]  scheduled ZSET     KEYS[2]  active ZSET     KEYS[3]  paused STRING
-- KEYS[4]  dead ZSET          KEYS[5]  task record prefix (the id is appended)
-- KEYS[6]  done ZSET          KEYS[7]  stats HASH
-- KEYS[8..] pending LISTs, one per priority level, level 0 first
--
-- ARGV[1]  max tasks to lease (the worker's free slots)
-- ARGV[2]  lease length ms
-- ARGV[3]  lease token base; task i of this call gets token "<base>:<i>"
-- ARGV[4]  order in which to try levels, comma-separated 0-based indexes
--          (strict priority: "0,1,2,3"; weighted mode: a weighted-random order)
-- ARGV[5]  the manifest's current policies of the functions WITHOUT dead letters, in
--          the form of reclaim.lua's ARGV[1]: JSON object function -> [max attempts,
--          false, result ttl ms]. A function not in it dead-letters (as in reclaim,
--          where an unknown function does), so a manifest where every function
--          dead-letters sends "{}".
-- ARGV[6]  dead letters kept at most (older ones and their records are dropped)
-- ARGV[7]  the queue's finished channel: the ids of records buried are published on it
--
-- First moves scheduled tasks whose time has come to their pending list (even while
-- paused), then, unless paused, pops and leases. A record that is missing is skipped
-- (its task was cancelled and expired). A record that fetch cannot run ends for good,
-- reason decode_error (end_for_good), so that nothing is dropped silently:
--   - one that is not a hash is replaced by a hash saying so. It names no function, so
--     no policy applies: it is dead-lettered (the dead set still kept to ARGV[6]);
--   - a queued hash without function or payload follows its function's policy when it
--     names one the manifest knows (dead letter, or `failed` kept for its result ttl),
--     else it is dead-lettered.
-- PERF(deadletter): the normal path pays nothing for this: ARGV[5] is decoded, and
-- the ending context made, only when such a record is found.
--
-- Returns {now ms, next scheduled run-at ms or -1, n, then 8 values per leased task:
--          id, token, function, payload, attempts, headers, priority, created_at}
local now = NOW
local prefix = KEYS[5]
local ends = nil

-- End for good, reason decode_error, a record fetch cannot run; fn: the function it
-- names (nil or false: none).
local function bury_garbage(id, fn, message)
  ends = ends or new_ends(KEYS[4], KEYS[6], KEYS[7], prefix, ARGV[6], ARGV[5])
  local tkey = prefix .. id
  redis.call('HSET', tkey, 'id', id)
  redis.call('HSETNX', tkey, 'attempts', 0)
  local err = cjson.encode({type = 'DecodeError', message = message})
  end_for_good(ends, id, fn, failed_keep_ms(ends, fn), 'decode_error', err, nil)
end

-- A record that is not a hash is replaced by one that can say what happened.
local function bury_not_hash(id)
  redis.call('DEL', prefix .. id)
  bury_garbage(id, nil, 'task record is not a hash')
end

local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local tkey = prefix .. id
  local kind = redis.call('TYPE', tkey).ok
  if kind == 'hash' then
    if redis.call('HGET', tkey, 'state') == 'scheduled' then
      redis.call('HSET', tkey, 'state', 'queued')
      redis.call('LPUSH', pending_key(8, redis.call('HGET', tkey, 'level')), id)
    end
  elseif kind ~= 'none' then
    bury_not_hash(id)
  end
end

local out = {now, -1, 0}
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if head[2] then out[2] = tonumber(head[2]) end
if redis.call('EXISTS', KEYS[3]) == 1 then
  if ends then close_ends(ends) end
  announce(ARGV[7])
  return out
end

local want = tonumber(ARGV[1])
local lease_until = now + tonumber(ARGV[2])
local got = 0
for level in string.gmatch(ARGV[4], '%d+') do
  local list = KEYS[8 + tonumber(level)]
  while got < want do
    local id = redis.call('RPOP', list)
    if not id then break end
    local tkey = prefix .. id
    local kind = redis.call('TYPE', tkey).ok
    if kind == 'hash' then
      local f = redis.call('HMGET', tkey, 'state', 'function', 'payload', 'headers',
        'priority', 'created_at')
      if f[1] == 'queued' and f[2] and f[3] then
        got = got + 1
        local token = ARGV[3] .. ':' .. got
        local attempts = redis.call('HINCRBY', tkey, 'attempts', 1)
        redis.call('HSET', tkey, 'state', 'running', 'started_at', now, 'lease', token)
        redis.call('ZADD', KEYS[2], lease_until, id)
        local n = #out
        out[n + 1] = id
        out[n + 2] = token
        out[n + 3] = f[2]
        out[n + 4] = f[3]
        out[n + 5] = attempts
        out[n + 6] = f[4] or ''
        out[n + 7] = f[5] or ''
        out[n + 8] = f[6] or ''
      elseif f[1] == 'queued' then
        bury_garbage(id, f[2], 'task record has no function or no payload')
      end
    elseif kind ~= 'none' then
      bury_not_hash(id)
    end
  end
  if got >= want then break end
end
out[3] = got
if ends then close_ends(ends) end
announce(ARGV[7])
return out
