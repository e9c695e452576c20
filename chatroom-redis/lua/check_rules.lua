-- Whether a node with rules ARGV[1] may join the cluster now.
-- KEYS: nodes, rules. Returns {'ok'} or {'rules', the cluster's rules}.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local stored = rules_differ(KEYS[1], KEYS[2], '', ARGV[1], now)
if stored then return {'rules', stored} end
return {'ok'}
