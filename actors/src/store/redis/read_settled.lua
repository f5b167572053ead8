-- KEYS[1] a value whose GET was pending: {'inflight'} while it is, else
-- {'found', value} (or {} if it went).
local v = redis.call('GET', KEYS[1])
if not v then return {} end
local u = string.match(v, '^P(%d+)|')
if u then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) < tonumber(u) then return {'inflight'} end
end
return {'found', v}
