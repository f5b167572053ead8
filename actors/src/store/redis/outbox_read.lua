-- KEYS[1] the ledger's outbox stream; ARGV[1] how many entries at most.
-- The oldest entries, as {id, key, value, ...}, up to the first one whose
-- record is still pending (`P<until ms>|…`): it may yet be withdrawn,
-- which deletes its entry. Past its time it cannot be, and its value is
-- given settled.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[1])) do
  local f = {}
  for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end
  local v = f['v'] or ''
  local u, rest = string.match(v, '^P(%d+)|(.*)$')
  if u then
    if now < tonumber(u) then break end
    v = rest
  end
  out[#out + 1] = e[1]
  out[#out + 1] = f['k'] or ''
  out[#out + 1] = v
end
return out
