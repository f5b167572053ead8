-- Put-if-absent with a deadline in the server's clock. KEYS[1] the key;
-- KEYS[2], when given, the ledger's outbox stream. ARGV: value, ttl ms,
-- deadline (server unix ms), the outbox's bound. A value still pending
-- (`P<until ms>|…`, redis.wait_replicas) is in flight, not an answer. With
-- an outbox the record and its entry are one write: at the bound, neither.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[3]) then return {'late'} end
local existing = redis.call('GET', KEYS[1])
if existing then
  local u = string.match(existing, '^P(%d+)|')
  if u and now < tonumber(u) then return {'inflight'} end
  return {'existing', existing}
end
if KEYS[2] and redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[4]) then return {'outbox_full'} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if KEYS[2] then
  return {'inserted', redis.call('XADD', KEYS[2], '*', 'k', KEYS[1], 'v', ARGV[1])}
end
return {'inserted'}
