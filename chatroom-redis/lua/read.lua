-- Reads one room. ARGV 7..: what ('room' | 'members' | 'links' | 'seq' | 'holder' | 'token'), a name key
-- or token (holder, token).
local what, arg = ARGV[7], ARGV[8]
local bad = fenced()
if bad then return bad end
if redis.call('EXISTS', K_META) == 0 then return {'none'} end
if what == 'seq' then
  return {'ok', redis.call('HGET', K_META, 'seq')}
elseif what == 'holder' then
  local mid = redis.call('HGET', K_NAMES, arg)
  if not mid then return {'none'} end
  return {'ok', mget(mid, 'name')}
elseif what == 'token' then
  local mid = redis.call('HGET', K_TOK, redis.sha1hex(arg))
  if not mid then return {'none'} end
  return {'ok', mget(mid, 'name')}
end
local out = {}
for i, mid in ipairs(redis.call('ZRANGE', K_ORDER, 0, -1)) do
  if what == 'members' then
    out[i] = {mid, mget(mid, 'name'), mget(mid, 'state'), mget(mid, 'joined')}
  elseif what == 'links' then
    out[i] = {mid, mget(mid, 'node'), mget(mid, 'link')}
  else
    out[i] = mget(mid, 'name')
  end
end
return {'ok', redis.call('HGET', K_META, 'display'), out, redis.call('HGET', K_META, 'seq'), redis.call('HGET', K_META, 'epoch')}
