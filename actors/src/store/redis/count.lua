-- KEYS[1] a counter; ARGV: ttl ms (set by the first count), cap. One more,
-- unless at the cap already; the count after.
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[2]) then return n end
n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
