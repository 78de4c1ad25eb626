-- reclaim: the sweep any process may run. Requeues tasks whose lease expired (their
-- worker died or froze), ends for good those out of attempts (reason worker_lost), and
-- drops expired finished records and dead letters past their retention age.
--
-- KEYS[1] active ZSET   KEYS[2] dead ZSET   KEYS[3] done ZSET   KEYS[4] notify LIST
-- KEYS[5] stats HASH    KEYS[6] task record prefix
-- KEYS[7..] pending LISTs, one per priority level, level 0 first
--
-- ARGV[1] the manifest's current policies: JSON object function -> [max attempts,
--         dead letter (true/false), result ttl ms]
-- ARGV[2] max attempts for functions not in that object
-- ARGV[3] dead-letter retention age ms
-- ARGV[4] at most this many entries handled per structure per call
-- ARGV[5] dead letters kept at most (older ones and their records are dropped)
-- ARGV[6] the queue's finished channel: the ids that ended are published on it
--
-- A reclaimed task counts the lost run as an attempt (it was fetched). One out of
-- attempts ends as its function says (end_for_good): dead-lettered, or `failed` and
-- kept for its result ttl when the function has dead_letter: false; a function the
-- manifest no longer knows has no policy and is dead-lettered.
-- Returns {requeued, ended for good (worker_lost), finished records dropped,
--          dead letters dropped for age}.
local prefix = KEYS[6]
local ends = new_ends(KEYS[2], KEYS[3], KEYS[5], prefix, ARGV[5], ARGV[1])
local default_max = tonumber(ARGV[2])
local limit = tonumber(ARGV[4])
local lost = '{"type":"WorkerLost","message":"the worker running this task stopped or '
  .. 'froze past its lease, and the task is out of attempts"}'
local requeued, ended = 0, 0

local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', NOW, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  local tkey = prefix .. id
  if redis.call('TYPE', tkey).ok == 'hash' then
    local f = redis.call('HMGET', tkey, 'state', 'function', 'attempts', 'level')
    if f[1] == 'running' then
      redis.call('HDEL', tkey, 'lease')
      local p = policy(ends, f[2])
      if tonumber(f[3] or 0) >= (p and tonumber(p[1]) or default_max) then
        end_for_good(ends, id, f[2], failed_keep_ms(ends, f[2]), 'worker_lost', lost, nil)
        ended = ended + 1
      else
        redis.call('HSET', tkey, 'state', 'queued')
        redis.call('RPUSH', pending_key(7, f[4]), id)
        requeued = requeued + 1
      end
    end
  end
end
wake(KEYS[4], requeued)
close_ends(ends)
announce(ARGV[6])

local done = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', NOW, 'LIMIT', 0, limit)
drop_all(KEYS[3], prefix, done)
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', NOW - tonumber(ARGV[3]), 'LIMIT', 0, limit)
drop_all(KEYS[2], prefix, old)
return {requeued, ended, #done, #old}
