-- Marks nodes whose lease ran out as dead (a tombstone their heartbeat answers
-- 'reaped' to) and returns every dead node whose rooms are still to be expired, with
-- its lease end. KEYS: nodes, hold-off, dead, dying, last heartbeat. ARGV: the calling
-- node, deadline (Redis ms), lease (ms), heartbeat interval (ms).
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
-- A call that waited past its deadline (in a frozen Redis) reaps nothing: the leases
-- that ran out meanwhile say nothing about their nodes.
if now > tonumber(ARGV[2]) then return {} end
-- Nobody renewed for two intervals: Redis was unreachable or frozen until now. Hold
-- reaping off for one lease, as the heartbeat does (whichever runs first).
local lease, interval = tonumber(ARGV[3]), tonumber(ARGV[4])
local prev = tonumber(redis.call('GET', KEYS[5]) or '0')
if prev > 0 and now - prev > 2 * interval then
  redis.call('SET', KEYS[2], string.format('%d', now + lease))
end
if now >= tonumber(redis.call('GET', KEYS[2]) or '0') then
  local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES')
  for i = 1, #expired, 2 do
    local n = expired[i]
    if n ~= ARGV[1] then
      redis.call('HSET', KEYS[3], n, expired[i + 1])
      redis.call('SADD', KEYS[4], n)
      redis.call('ZREM', KEYS[1], n)
    end
  end
end
-- Tombstones are kept for a day (a node paused longer than that is long gone), then
-- forgotten once their node's rooms were all expired.
local dead = redis.call('HGETALL', KEYS[3])
for i = 1, #dead, 2 do
  if tonumber(dead[i + 1]) < now - 86400000 and redis.call('SISMEMBER', KEYS[4], dead[i]) == 0 then
    redis.call('HDEL', KEYS[3], dead[i])
  end
end
local out = {}
for _, n in ipairs(redis.call('SMEMBERS', KEYS[4])) do
  out[#out + 1] = n
  out[#out + 1] = redis.call('HGET', KEYS[3], n) or '0'
end
return out
