-- KEYS as claim.lua; ARGV: id, body, hold ms, ttl ms. Only the claim's
-- holder publishes; publishing ends the claim.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], (now + tonumber(ARGV[3])) .. '|' .. ARGV[2], 'PX', ARGV[4])
redis.call('DEL', KEYS[2])
return 1
