-- KEYS[1] a record; KEYS[2], when given, the ledger's outbox stream.
-- ARGV: the pending value we wrote, the end of its pending time (server
-- unix ms), its outbox entry's id. Deletes it (and its entry) if unchanged
-- and still pending (1); 0: not ours; -1: too late, it stands.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) >= tonumber(ARGV[2]) then return -1 end
if KEYS[2] then redis.call('XDEL', KEYS[2], ARGV[3]) end
return redis.call('DEL', KEYS[1])
