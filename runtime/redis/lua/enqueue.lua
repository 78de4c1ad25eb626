-- enqueue: store a batch of tasks of one queue, atomically.
--
-- KEYS[1]  notify LIST (wake-up tokens for idle workers)
-- KEYS[2]  scheduled ZSET (id -> run-at ms)
-- KEYS[3]  task record prefix ("<prefix>:{q}:t:"; the id is appended)
-- KEYS[4]  idempotency prefix ("<prefix>:{q}:idem:"; "<function>:<key>" is appended)
-- KEYS[5..] pending LISTs, one per priority level, level 0 first
--
-- ARGV[1] queue name (kept in each record so that it describes itself)
-- ARGV[2] not after: the server-clock ms after which the submitter has given up
--         waiting (-1 none). A call that reaches Redis later (it sat in a socket
--         buffer while Redis was frozen) stores nothing: the submitter already
--         answered "not stored".
-- ARGV[3..]: 11 values per task, repeated:
--   id, function, priority name, level (0-based), payload JSON, headers JSON ("" none),
--   delay ms (-1 none; relative to the server's clock), run-at epoch ms (-1 none),
--   idempotency key ("" none), idempotency ttl ms, result ttl ms
--
-- All keys share one hash tag, so the script never leaves one cluster slot; record and
-- idempotency keys are the KEYS prefixes plus an id.
--
-- Returns a flat array, two values per task: id, then 1 stored now and queued, 2 stored
-- now and scheduled (its time is later on Redis's clock), or 0 if an earlier task with
-- the same id or idempotency key already exists (its id is returned); an error reply
-- starting with STALE when the call came after its deadline.
local now = NOW
local not_after = tonumber(ARGV[2])
if not_after >= 0 and now > not_after then
  return redis.error_reply('STALE the submission reached Redis after its deadline; nothing was stored')
end
local out = {}
local woken = 0
local queue = ARGV[1]
local n = (#ARGV - 2) / 11
for i = 0, n - 1 do
  local b = 2 + i * 11
  local id = ARGV[b + 1]
  local fn = ARGV[b + 2]
  local idem = ARGV[b + 9]
  local existing = nil
  if idem ~= '' then
    local ikey = KEYS[4] .. fn .. ':' .. idem
    if not redis.call('SET', ikey, id, 'NX', 'PX', ARGV[b + 10]) then
      existing = redis.call('GET', ikey)
    end
  end
  local tkey = KEYS[3] .. id
  if existing == nil and redis.call('EXISTS', tkey) == 1 then
    existing = id
  end
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
  else
    local level = tonumber(ARGV[b + 4])
    local delay = tonumber(ARGV[b + 7])
    local run_at = tonumber(ARGV[b + 8])
    if delay >= 0 then run_at = now + delay end
    local fields = {'id', id, 'function', fn, 'queue', queue,
      'priority', ARGV[b + 3], 'level', level, 'payload', ARGV[b + 5],
      'attempts', 0, 'created_at', now, 'result_ttl_ms', ARGV[b + 11]}
    if ARGV[b + 6] ~= '' then
      fields[#fields + 1] = 'headers'
      fields[#fields + 1] = ARGV[b + 6]
    end
    if idem ~= '' then
      fields[#fields + 1] = 'idempotency_key'
      fields[#fields + 1] = idem
    end
    if run_at > now then
      fields[#fields + 1] = 'state'
      fields[#fields + 1] = 'scheduled'
      fields[#fields + 1] = 'run_at'
      fields[#fields + 1] = run_at
      redis.call('HSET', tkey, unpack(fields))
      redis.call('ZADD', KEYS[2], run_at, id)
    else
      fields[#fields + 1] = 'state'
      fields[#fields + 1] = 'queued'
      redis.call('HSET', tkey, unpack(fields))
      redis.call('LPUSH', KEYS[5 + level], id)
    end
    woken = woken + 1
    out[#out + 1] = id
    out[#out + 1] = (run_at > now) and 2 or 1
  end
end
-- One token per new task, capped: each token wakes one blocked worker.
wake(KEYS[1], woken)
return out
