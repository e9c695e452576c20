-- A leave (by the member's link) or a kick (by name key or member id).
-- ARGV 7..: 'leave' | 'key' | 'mid', the member id or name key, link (leave), reason.
local how, who, link, reason = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local bad = fenced()
if bad then return bad end
if redis.call('EXISTS', K_META) == 0 then return {'gone'} end
local mid = who
if how == 'key' then
  mid = redis.call('HGET', K_NAMES, who)
  if not mid then return {'none'} end
elseif how == 'leave' then
  if not holds(mid, link) then return {'superseded'} end
elseif not mget(mid, 'name') then
  return {'none'}
end
local name = mget(mid, 'name')
local id, n, frame = remove(mid, how == 'leave' and 'l' or 'k', reason)
settle(n)
return {'ok', id, mid, name, frame, redis.call('HGET', K_META, 'display') or ''}
