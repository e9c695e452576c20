-- Renews the node's lease. KEYS: nodes, last heartbeat, hold-off, dead, instance,
-- rules. ARGV: node, lease (ms), heartbeat interval (ms), instance id, room rules.
-- A node whose room rules differ from those of the live cluster is refused
-- ({'rules', the cluster's rules}) and never gets a lease.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if redis.call('GET', KEYS[5]) ~= ARGV[4] then return {'lost'} end
if redis.call('HEXISTS', KEYS[4], ARGV[1]) == 1 then return {'reaped'} end
local stored = rules_differ(KEYS[1], KEYS[6], ARGV[1], ARGV[5], now)
if stored then return {'rules', stored} end
redis.call('SET', KEYS[6], ARGV[5])
local lease, interval = tonumber(ARGV[2]), tonumber(ARGV[3])
local prev = tonumber(redis.call('GET', KEYS[2]) or '0')
-- Nobody renewed for two intervals: Redis was unreachable (or frozen). Leases that ran
-- out meanwhile say nothing about their nodes: hold reaping off for one lease.
if prev > 0 and now - prev > 2 * interval then
  redis.call('SET', KEYS[3], string.format('%d', now + lease))
end
redis.call('SET', KEYS[2], string.format('%d', now))
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
return {'ok', now}
