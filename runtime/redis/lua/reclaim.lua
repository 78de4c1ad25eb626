-- reclaim: the sweep any process may run. Requeues tasks whose lease expired (their
-- worker died or froze), dead-letters those out of attempts, and drops expired
-- finished records and dead letters past their retention age.
--
-- KEYS[1] active ZSET   KEYS[2] dead ZSET   KEYS[3] done ZSET   KEYS[4] notify LIST
-- KEYS[5] stats HASH    KEYS[6] task record prefix
-- KEYS[7..] pending LISTs, one per priority level, level 0 first
--
-- ARGV[1] JSON object function -> max attempts (the manifest's current policy)
-- ARGV[2] max attempts for functions not in that object
-- ARGV[3] dead-letter retention age ms
-- ARGV[4] at most this many entries handled per structure per call
--
-- A reclaimed task counts the lost run as an attempt (it was fetched). Returns
-- {requeued, dead-lettered (worker_lost), finished records dropped, dead letters dropped}.
local prefix = KEYS[6]
local limits = cjson.decode(ARGV[1])
local default_max = tonumber(ARGV[2])
local limit = tonumber(ARGV[4])
local requeued, buried = 0, 0

local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', NOW, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  local tkey = prefix .. id
  if redis.call('TYPE', tkey).ok == 'hash' then
    local f = redis.call('HMGET', tkey, 'state', 'function', 'attempts', 'level')
    if f[1] == 'running' then
      redis.call('HDEL', tkey, 'lease')
      local max = tonumber(limits[f[2]] or default_max)
      if tonumber(f[3] or 0) >= max then
        push_error(tkey, '{"type":"WorkerLost","message":"the worker running this task '
          .. 'stopped or froze past its lease, and the task is out of attempts"}')
        redis.call('HSET', tkey, 'state', 'dead', 'reason', 'worker_lost', 'finished_at', NOW)
        redis.call('ZADD', KEYS[2], NOW, id)
        redis.call('HINCRBY', KEYS[5], 'dead', 1)
        redis.call('HINCRBY', KEYS[5], 'dead:' .. f[2], 1)
        buried = buried + 1
      else
        redis.call('HSET', tkey, 'state', 'queued')
        redis.call('RPUSH', pending_key(7, f[4]), id)
        requeued = requeued + 1
      end
    end
  end
end
wake(KEYS[4], requeued)

local done = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', NOW, 'LIMIT', 0, limit)
drop_all(KEYS[3], prefix, done)
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', NOW - tonumber(ARGV[3]), 'LIMIT', 0, limit)
drop_all(KEYS[2], prefix, old)
return {requeued, buried, #done, #old}
