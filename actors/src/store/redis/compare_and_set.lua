-- KEYS[1] a small record; KEYS[2], when given, the ledger's outbox stream.
-- ARGV: '1' if a value is expected ('0': absent), the expected value, the
-- new value, ttl ms, the outbox's bound. {'set'}, {'current'[, v]}, or
-- {'outbox_full'} (nothing written). With an outbox the new value and its
-- entry are one write.
local v = redis.call('GET', KEYS[1])
if (ARGV[1] == '0' and not v) or (ARGV[1] == '1' and v == ARGV[2]) then
  if KEYS[2] and redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[5]) then return {'outbox_full'} end
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
  if KEYS[2] then redis.call('XADD', KEYS[2], '*', 'k', KEYS[1], 'v', ARGV[3]) end
  return {'set'}
end
if v then return {'current', v} end
return {'current'}
