-- replay: move dead letters back to their queue as fresh tasks (attempts reset).
--
-- KEYS[1] dead ZSET   KEYS[2] notify LIST   KEYS[3] task record prefix
-- KEYS[4..] pending LISTs, one per priority level, level 0 first
-- ARGV[1] function filter ("" = any)   ARGV[2] max count   ARGV[3..] ids ("" = all, oldest first)
--
-- Returns the ids replayed.
local prefix = KEYS[3]
local ids = chosen_ids(KEYS[1], 3, ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  local tkey = prefix .. id
  if redis.call('ZSCORE', KEYS[1], id) and redis.call('TYPE', tkey).ok == 'hash' then
    local f = redis.call('HMGET', tkey, 'function', 'level', 'payload')
    if f[1] and f[3] and (ARGV[1] == '' or ARGV[1] == f[1]) then
      redis.call('ZREM', KEYS[1], id)
      redis.call('HSET', tkey, 'state', 'queued', 'attempts', 0)
      redis.call('HDEL', tkey, 'finished_at', 'reason', 'started_at')
      redis.call('LPUSH', pending_key(4, f[2]), id)
      out[#out + 1] = id
    end
  end
end
wake(KEYS[2], #out)
return out
