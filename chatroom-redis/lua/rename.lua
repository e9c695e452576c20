-- A rename. ARGV 7..: member id, link, new name key, new display name, new name as JSON.
local mid, link, key, name, jname = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local bad = fenced()
if bad then return bad end
if redis.call('EXISTS', K_META) == 0 then return {'gone'} end
if not holds(mid, link) then return {'superseded'} end
local holder = redis.call('HGET', K_NAMES, key)
if holder and holder ~= mid then
  return {'name_taken', mget(holder, 'name'), redis.call('HGET', K_META, 'seq')}
end
local oldkey, jold = mget(mid, 'key'), mget(mid, 'jname')
redis.call('HDEL', K_NAMES, oldkey)
redis.call('HSET', K_NAMES, key, mid)
redis.call('HSET', K_MEM, mid .. ':key', key, mid .. ':name', name, mid .. ':jname', jname)
local id, frame = record('r', mid, '', function(id, ts)
  return '{"type":"renamed","id":' .. id .. ',"ts":' .. ts .. ',"from":' .. jold .. ',"to":' .. jname .. '}'
end)
return {'ok', id, frame}
