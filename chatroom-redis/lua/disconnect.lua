-- The member's connection ended without `leave`: it becomes away for the grace period.
-- ARGV 7..: member id ('' to find it by token), link, grace (ms), token.
local mid, link, grace = ARGV[7], ARGV[8], tonumber(ARGV[9])
local bad = fenced()
if bad then return bad end
if redis.call('EXISTS', K_META) == 0 then return {'gone'} end
if mid == '' then
  mid = redis.call('HGET', K_TOK, redis.sha1hex(ARGV[10]))
  if not mid then return {'gone'} end
end
if not holds(mid, link) then return {'superseded'} end
if mget(mid, 'state') ~= 'p' then return {'ok'} end
local until_ms = now + grace
redis.call('HSET', K_MEM, mid .. ':state', 'a', mid .. ':until', until_ms)
redis.call('ZADD', K_AWAY, until_ms, mid)
settle(tonumber(redis.call('HGET', K_META, 'n')))
return {'ok'}
