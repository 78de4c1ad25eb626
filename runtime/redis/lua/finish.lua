-- finish: record the outcomes of a batch of leased tasks of one queue, fenced by lease.
--
-- KEYS[1] active ZSET   KEYS[2] scheduled ZSET   KEYS[3] dead ZSET   KEYS[4] done ZSET
-- KEYS[5] stats HASH    KEYS[6] notify LIST      KEYS[7] task record prefix
--
-- ARGV[1] dead letters kept at most (older ones and their records are dropped)
-- ARGV[2] the queue's finished channel: the ids that ended are published on it
-- ARGV[3..]: 7 values per outcome, repeated:
--   id, lease token, outcome, data, traceback, ms, reason
--   outcome  succeeded: data = result JSON; ms = result ttl (0 = drop the record now)
--            retry:     data = error JSON; ms = delay before the next attempt
--            park:      data = error JSON; ms = delay before it is looked at again. The
--                       function is not known to the worker (removed from the manifest):
--                       not a failure, so the attempt is not counted (as in release.lua)
--                       and no counter moves; the task waits until the function is back
--            dead:      data = error JSON; reason = why (max_attempts, timeout, ...)
--            failed:    data = error JSON; ms = result ttl (functions without dead letters)
--
-- An outcome whose token is not the task's current lease (the lease expired and the
-- task moved on) is refused: fencing, so a slow worker cannot overwrite a rerun.
--
-- Returns one integer per outcome: 1 recorded, 0 refused (stale lease).
--
-- dead and failed go through end_for_good (_lib.lua), as every way of ending for good
-- does; the worker chose between them from the function's dead_letter setting.
local now = NOW
local prefix = KEYS[7]
local out = {}
local ends = new_ends(KEYS[3], KEYS[4], KEYS[5], prefix, ARGV[1], nil)
local rescheduled = false

for b = 3, #ARGV, 7 do
  local id, token, outcome = ARGV[b], ARGV[b + 1], ARGV[b + 2]
  local data, tb, ms, reason = ARGV[b + 3], ARGV[b + 4], tonumber(ARGV[b + 5]), ARGV[b + 6]
  local tkey = prefix .. id
  local f = redis.call('HMGET', tkey, 'state', 'lease', 'function', 'attempts')
  if f[1] ~= 'running' or f[2] ~= token then
    out[#out + 1] = 0
  else
    local fn = f[3]
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', tkey, 'lease')
    if outcome == 'succeeded' then
      redis.call('HSET', tkey, 'state', 'succeeded', 'result', data, 'finished_at', now)
      keep_for(KEYS[4], tkey, id, ms)
      count(ends, 'processed', fn)
      finished(id)
    elseif outcome == 'retry' then
      push_error(tkey, data)
      redis.call('HSET', tkey, 'state', 'scheduled', 'run_at', now + ms, 'traceback', tb)
      redis.call('ZADD', KEYS[2], now + ms, id)
      rescheduled = true
      count(ends, 'failed', fn)
      count(ends, 'retried', fn)
    elseif outcome == 'park' then
      local attempts = math.max(0, (tonumber(f[4]) or 1) - 1)
      redis.call('HDEL', tkey, 'started_at')
      redis.call('HSET', tkey, 'state', 'scheduled', 'run_at', now + ms, 'error', data,
        'attempts', attempts)
      redis.call('ZADD', KEYS[2], now + ms, id)
    elseif outcome == 'dead' then
      end_for_good(ends, id, fn, nil, reason, data, tb)
    else
      end_for_good(ends, id, fn, ms, reason, data, tb)
    end
    out[#out + 1] = 1
  end
end

close_ends(ends)
announce(ARGV[2])
-- A retry may be due before an idle worker's next wake-up: wake one to re-plan.
if rescheduled then wake(KEYS[6], 1) end
return out
