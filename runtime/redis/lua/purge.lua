-- purge: delete dead letters and their records.
--
-- KEYS[1] dead ZSET   KEYS[2] task record prefix
-- ARGV[1] function filter ("" = any)   ARGV[2] max count   ARGV[3..] ids ("" = all)
--
-- Returns the number of dead letters deleted.
local ids = chosen_ids(KEYS[1], 3, ARGV[2])
local gone = {}
for _, id in ipairs(ids) do
  if redis.call('ZSCORE', KEYS[1], id) then
    local fn = redis.call('HGET', KEYS[2] .. id, 'function')
    if ARGV[1] == '' or ARGV[1] == fn then gone[#gone + 1] = id end
  end
end
drop_all(KEYS[1], KEYS[2], gone)
return #gone
