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
