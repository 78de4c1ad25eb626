-- cancel: cancel a task that has not started (queued or scheduled).
--
-- KEYS[1] task record HASH   KEYS[2] scheduled ZSET   KEYS[3] done ZSET
-- KEYS[4..] pending LISTs, one per priority level, level 0 first
-- ARGV[1] task id   ARGV[2] how long the cancelled record is kept, ms, when the record
--                    does not say (its result_ttl_ms, set at submission, wins)
-- ARGV[3] the queue's finished channel (the id is published on it once cancelled)
--
-- Returns {1, "cancelled"} when cancelled; {0, state} when the task is in a state
-- that cannot be cancelled (running, finished, dead); {-1, ""} when there is no task.
local id = ARGV[1]
local tkey = KEYS[1]
if redis.call('TYPE', tkey).ok ~= 'hash' then return {-1, ''} end
local f = redis.call('HMGET', tkey, 'state', 'level', 'result_ttl_ms')
local removed = 0
if f[1] == 'queued' then
  removed = redis.call('LREM', pending_key(4, f[2]), 1, id)
elseif f[1] == 'scheduled' then
  removed = redis.call('ZREM', KEYS[2], id)
end
if removed == 0 then return {0, f[1] or ''} end
redis.call('HSET', tkey, 'state', 'cancelled', 'finished_at', NOW)
keep_for(KEYS[3], tkey, id, tonumber(f[3] or ARGV[2]))
finished(id)
announce(ARGV[3])
return {1, 'cancelled'}
