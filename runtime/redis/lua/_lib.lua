-- _lib: prepended by scripts.py to every script in this folder (Redis has no include).
-- Defines NOW (the server's clock, ms) and helpers that several scripts share.
local time_ = redis.call('TIME')
local NOW = tonumber(time_[1]) * 1000 + math.floor(tonumber(time_[2]) / 1000)

-- Push n wake-up tokens (at most 8) onto a notify list, keeping it short.
local function wake(notify, n)
  if n <= 0 then return end
  local tokens = {}
  for i = 1, math.min(n, 8) do tokens[i] = '1' end
  redis.call('LPUSH', notify, unpack(tokens))
  redis.call('LTRIM', notify, 0, 31)
end

-- The pending list of a level, given pending lists start at KEYS[first]; a level
-- outside the queue's current levels (the manifest changed) goes to the lowest one.
local function pending_key(first, level)
  local levels = #KEYS - first + 1
  level = tonumber(level) or (levels - 1)
  if level < 0 then level = 0 end
  if level >= levels then level = levels - 1 end
  return KEYS[first + level]
end

-- Record an attempt's error as the task's last error and in its capped history.
local function push_error(tkey, data)
  local ok, err = pcall(cjson.decode, data)
  if not ok or type(err) ~= 'table' then err = {message = data} end
  err.attempt = tonumber(redis.call('HGET', tkey, 'attempts'))
  err.at = NOW
  local list = {}
  local prev = redis.call('HGET', tkey, 'errors')
  if prev then
    local ok2, decoded = pcall(cjson.decode, prev)
    if ok2 and type(decoded) == 'table' then list = decoded end
  end
  list[#list + 1] = err
  while #list > 10 do table.remove(list, 1) end
  redis.call('HSET', tkey, 'error', data, 'errors', cjson.encode(list))
end

-- Delete the records of the given ids and remove them from a ZSET.
local function drop_all(zset, prefix, ids)
  for _, id in ipairs(ids) do redis.call('DEL', prefix .. id) end
  if #ids > 0 then redis.call('ZREM', zset, unpack(ids)) end
end

-- Keep a finished record for ttl ms (indexed in the done ZSET for the sweep), or
-- delete it now when ttl is 0.
local function keep_for(done, tkey, id, ttl)
  if ttl > 0 then
    redis.call('PEXPIRE', tkey, ttl)
    redis.call('ZADD', done, NOW + ttl, id)
  else
    redis.call('DEL', tkey)
  end
end

-- The ids named in ARGV[first..], or when none are named the oldest `limit` of a ZSET.
local function chosen_ids(zset, first, limit)
  if #ARGV < first then
    return redis.call('ZRANGE', zset, 0, tonumber(limit) - 1)
  end
  local ids = {}
  for i = first, #ARGV do ids[#ids + 1] = ARGV[i] end
  return ids
end

-- Final states. Every move of a task into a final state (succeeded, failed, dead,
-- cancelled) calls finished(id): succeeded and cancelled directly, failed and dead
-- through end_for_good. NOTE(deadletter): FINISHED collects the ids so that one hook,
-- run by the script at its end, can act on all of them (long-poll notifications).
local FINISHED = {}
local function finished(id)
  FINISHED[#FINISHED + 1] = id
end

-- Tell waiters (runtime/waiting.py: long-polls, Client.wait) which tasks this call
-- moved to a final state: one PUBLISH of their ids on the queue's finished channel
-- (a channel name, passed in ARGV), none when no task ended. PERF: with no
-- subscriber, PUBLISH costs Redis about a microsecond per call, not per task.
local function announce(channel)
  if #FINISHED > 0 then redis.call('PUBLISH', channel, table.concat(FINISHED, ' ')) end
end

-- A script's context for tasks that end: new_ends once per script, end_for_good per
-- task, close_ends once at the end (one HINCRBY per counter, one trim of the dead set).
--   dead, done: the queue's dead and done ZSETs   stats: its stats HASH
--   prefix: task record prefix   dead_max: dead letters kept at most (the oldest are
--   dropped with their records)
--   policies: the manifest's current policies, a JSON object function -> [max attempts,
--   dead letter (true/false), result ttl ms]; nil when the caller decides (finish.lua)
local function new_ends(dead, done, stats, prefix, dead_max, policies)
  return {dead = dead, done = done, stats = stats, prefix = prefix,
    dead_max = tonumber(dead_max), policies = policies, counts = {}, buried = false}
end

-- Count one event in the stats HASH, in total and for the function when known.
local function count(ends, name, fn)
  local counts = ends.counts
  counts[name] = (counts[name] or 0) + 1
  if fn then
    local key = name .. ':' .. fn
    counts[key] = (counts[key] or 0) + 1
  end
end

-- A function's policy {max attempts, dead letter, result ttl ms}, or nil when the
-- manifest does not know it (fn nil or false: no function). PERF(deadletter): the
-- JSON is decoded on first use only; fetch passes it on every call and almost never
-- needs it.
local function policy(ends, fn)
  if ends.policies == nil or not fn then return nil end
  if type(ends.policies) == 'string' then ends.policies = cjson.decode(ends.policies) end
  local p = ends.policies[fn]
  if type(p) ~= 'table' then return nil end
  return p
end

-- How long a task of fn that ends for good is kept as `failed` (its function has
-- dead_letter: false), or nil: it is dead-lettered. No policy (a function the manifest
-- does not know, or no function at all) means a dead letter: nothing vanishes.
local function failed_keep_ms(ends, fn)
  local p = policy(ends, fn)
  if p and p[2] == false then return tonumber(p[3]) or 0 end
  return nil
end

-- End a task for good after a failure: the one place that does it. keep_ms nil:
-- dead-letter it (state dead, in the dead ZSET, no expiry; trimmed by close_ends);
-- a number: end it `failed`, its record kept keep_ms in done (0: deleted now). The
-- error (JSON) joins the task's history; tb (nil: left alone) is its traceback.
-- Counts as finish.lua always did: failed, plus dead for a dead letter.
local function end_for_good(ends, id, fn, keep_ms, reason, err, tb)
  local tkey = ends.prefix .. id
  push_error(tkey, err)
  local fields = {'state', keep_ms and 'failed' or 'dead', 'finished_at', NOW, 'reason', reason}
  if tb then
    fields[#fields + 1] = 'traceback'
    fields[#fields + 1] = tb
  end
  redis.call('HSET', tkey, unpack(fields))
  count(ends, 'failed', fn)
  if keep_ms then
    keep_for(ends.done, tkey, id, keep_ms)
  else
    redis.call('PERSIST', tkey)
    redis.call('ZADD', ends.dead, NOW, id)
    count(ends, 'dead', fn)
    ends.buried = true
  end
  finished(id)
end

-- Write the counters and keep the dead set within dead_max (oldest dropped first).
local function close_ends(ends)
  for name, n in pairs(ends.counts) do
    redis.call('HINCRBY', ends.stats, name, n)
  end
  if ends.buried then
    local extra = redis.call('ZCARD', ends.dead) - ends.dead_max
    if extra > 0 then
      drop_all(ends.dead, ends.prefix, redis.call('ZRANGE', ends.dead, 0, extra - 1))
    end
  end
end
