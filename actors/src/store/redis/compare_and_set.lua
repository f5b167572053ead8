-- KEYS[1] a small record; ARGV: '1' if a value is expected ('0': absent),
-- the expected value, the new value, ttl ms. {'set'} or {'current'[, v]}.
local v = redis.call('GET', KEYS[1])
if (ARGV[1] == '0' and not v) or (ARGV[1] == '1' and v == ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
  return {'set'}
end
if v then return {'current', v} end
return {'current'}
