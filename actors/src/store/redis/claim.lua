-- The lookup exchange. KEYS[1] the published result, KEYS[2] the claim,
-- KEYS[3] the payment's record (one hash tag: one slot of a cluster).
-- ARGV: id, ttl ms, want_held. A consumed payment answers from its record;
-- a record still pending (`P<until ms>|…`, redis.wait_replicas) may yet be
-- withdrawn, so it is no answer. Results are stored as
-- `<hold until, server ms>|<body>`: the server's clock decides the hold,
-- so instances' clocks need not agree.
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local rec = redis.call('GET', KEYS[3])
if rec then
  local u = string.match(rec, '^P(%d+)|')
  if not u or now() >= tonumber(u) then return {'consumed', rec} end
end
local r = redis.call('GET', KEYS[1])
if r and ARGV[3] == '1' then
  local ms = now()
  local a = string.find(r, '|', 1, true)
  local untilms = a and tonumber(string.sub(r, 1, a - 1)) or 0
  if untilms > ms then
    return {'held', string.sub(r, a + 1), tostring(untilms - ms)}
  end
end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'claimed'} end
return {'wait', redis.call('GET', KEYS[2]) or ''}
