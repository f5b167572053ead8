-- KEYS[1] the ledger's outbox stream: {entries, age of the oldest in ms
-- (-1: none)}, in the server's clock.
local n = redis.call('XLEN', KEYS[1])
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
if not first then return {n, -1} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {n, now - tonumber(string.match(first[1], '^(%d+)'))}
