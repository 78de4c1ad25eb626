-- extend: renew the leases a worker holds (its heartbeat), fenced by token.
--
-- KEYS[1] active ZSET   KEYS[2] task record prefix
-- ARGV[1] lease length ms; ARGV[2..]: id, token pairs
--
-- Returns the ids whose lease is no longer this worker's (expired and taken over,
-- or the task was finished elsewhere): the worker must not report their outcome.
local lost = {}
local until_ = NOW + tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', KEYS[2] .. id, 'lease') == token then
    redis.call('ZADD', KEYS[1], 'XX', until_, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
