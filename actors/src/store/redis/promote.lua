-- KEYS[1] a record confirmed by its replicas; ARGV: the pending value we
-- wrote, the settled value. Replaces the first by the second, same expiry.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl) end
return 1
