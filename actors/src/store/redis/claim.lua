-- The lookup exchange. KEYS[1] the published result, KEYS[2] the claim
-- (one hash tag: one slot of a cluster). ARGV: id, ttl ms, want_held.
-- Results are stored as `<hold until, server ms>|<body>`: the server's
-- clock decides the hold, so instances' clocks need not agree.
local r = redis.call('GET', KEYS[1])
if r and ARGV[3] == '1' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local a = string.find(r, '|', 1, true)
  local untilms = a and tonumber(string.sub(r, 1, a - 1)) or 0
  if untilms > now then
    return {'held', string.sub(r, a + 1), tostring(untilms - now)}
  end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'claimed'} end
return {'wait', redis.call('GET', KEYS[2]) or ''}
