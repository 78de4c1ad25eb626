-- progress: store a running task's progress, only while the caller holds its lease.
--
-- KEYS[1] task record HASH
-- ARGV[1] lease token   ARGV[2] progress JSON
-- Returns 1 when stored, 0 when the lease is not the caller's.
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[2])
return 1
