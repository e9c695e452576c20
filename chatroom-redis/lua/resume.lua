-- A resume. ARGV 7..: token, link, since ('' for none), the name the policy judged,
-- history window.
local token, link, since, expected, window = ARGV[7], ARGV[8], tonumber(ARGV[9]), ARGV[10], tonumber(ARGV[11])
local bad = fenced()
if bad then return bad end
if redis.call('EXISTS', K_META) == 0 then return {'resume_failed'} end
local mid = redis.call('HGET', K_TOK, redis.sha1hex(token))
if not mid then return {'resume_failed'} end
local name = mget(mid, 'name')
if name ~= expected then return {'renamed'} end
local oldnode, oldlink, state = mget(mid, 'node') or '', mget(mid, 'link') or '', mget(mid, 'state')
-- Past its grace but not reaped yet: gone all the same.
if state == 'a' and tonumber(mget(mid, 'until') or '0') <= now then return {'resume_failed'} end
redis.call('HSET', K_MEM, mid .. ':node', node, mid .. ':link', link, mid .. ':state', 'p')
redis.call('HDEL', K_MEM, mid .. ':until')
redis.call('ZREM', K_AWAY, mid)
if state == 'p' then
  redis.call('HINCRBY', K_META, 'gen', 1)
  redis.call('PUBLISH', channel, 'C ' .. mid .. ' ' .. oldnode .. ' ' .. oldlink)
end
redis.call('SADD', K_NODEROOMS, room)
local n = tonumber(redis.call('HGET', K_META, 'n'))
settle(n)
local seq, names, frames, gap = welcome(since, window)
return {'ok', redis.call('HGET', K_META, 'epoch'), seq, redis.call('HGET', K_META, 'display'), names, frames, gap, mid}
