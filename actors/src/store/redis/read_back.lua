-- After a consume whose answer was lost. KEYS[1] the key; ARGV: the
-- consume's deadline (server unix ms), the value it wrote (without its
-- pending prefix). {'early', ms} until no such consume can land; then {}
-- (absent, or our pending copy withdrawn), {'inflight'} (someone else's
-- pending copy), or {'found', value}.
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
      return {}
    end
    return {'inflight'}
  end
  return {'found', rest}
end
return {'found', v}
