-- After a consume whose answer was lost. KEYS[1] the key; ARGV: the
-- consume's deadline (server unix ms), the value it wrote (without its
-- pending prefix). {'early', ms} until no such consume can land; then {}
-- (absent, or our pending copy withdrawn), {'inflight'} (someone else's
-- pending copy), or {'found', value}. KEYS[2], when given, the ledger's
-- outbox stream: a withdrawn copy's entry goes with it. It was appended
-- before the copy's pending time `u` and at most redis.timeout_ms (60 s at
-- most) plus the clock margin before it: searched by `u`, which is exact,
-- not by ARGV[1], measured again after a failure and so off by its error.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now <= tonumber(ARGV[1]) then return {'early', tostring(tonumber(ARGV[1]) - now + 1)} end
local v = redis.call('GET', KEYS[1])
if not v then return {} end
local u = string.match(v, '^P(%d+)|')
if u then
  local rest = string.sub(v, string.len(u) + 3)
  if now < tonumber(u) then
    if rest == ARGV[2] then
      redis.call('DEL', KEYS[1])
      if KEYS[2] then
        local d = tonumber(u)
        for _, e in ipairs(redis.call('XRANGE', KEYS[2], tostring(d - 120000), tostring(d))) do
          for i = 1, #e[2], 2 do
            if e[2][i] == 'v' and e[2][i + 1] == v then redis.call('XDEL', KEYS[2], e[1]) end
          end
        end
      end
      return {}
    end
    return {'inflight'}
  end
  return {'found', rest}
end
return {'found', v}
