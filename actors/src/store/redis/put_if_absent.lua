-- The same as `SET … NX PX … GET` for servers older than Redis 7.0, which
-- refuse NX with GET. KEYS[1] the key; ARGV: value, ttl ms.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])
