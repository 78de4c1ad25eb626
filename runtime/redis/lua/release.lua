-- release: hand leased tasks back to their queue at once (graceful shutdown).
--
-- KEYS[1] active ZSET   KEYS[2] notify LIST   KEYS[3] task record prefix
-- KEYS[4..] pending LISTs, one per priority level, level 0 first
-- ARGV: id, token pairs
--
-- A released task goes to the front of its level (it is fetched next) and its attempt
-- is not counted: it did not fail, the worker stopped. Tokens that no longer match
-- are ignored. Returns the number of tasks released.
local n = 0
for i = 1, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  local tkey = KEYS[3] .. id
  local f = redis.call('HMGET', tkey, 'state', 'lease', 'level', 'attempts')
  if f[1] == 'running' and f[2] == token then
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', tkey, 'lease', 'started_at')
    redis.call('HSET', tkey, 'state', 'queued', 'attempts', math.max(0, tonumber(f[4]) - 1))
    redis.call('RPUSH', pending_key(4, f[3]), id)
    n = n + 1
  end
end
wake(KEYS[2], n)
return n
