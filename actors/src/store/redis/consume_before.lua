-- Put-if-absent with a deadline in the server's clock. KEYS[1] the key;
-- ARGV: value, ttl ms, deadline (server unix ms). A value still pending
-- (`P<until ms>|…`, redis.wait_replicas) is in flight, not an answer.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now > tonumber(ARGV[3]) then return {'late'} end
local existing = redis.call('GET', KEYS[1])
if existing then
  local u = string.match(existing, '^P(%d+)|')
  if u and now < tonumber(u) then return {'inflight'} end
  return {'existing', existing}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {'inserted'}
