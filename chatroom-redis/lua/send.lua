-- A message. ARGV 7..: member id ('' for the host's post), link, text as JSON, the
-- sender's name as JSON (a post only).
local mid, link, jtext = ARGV[7], ARGV[8], ARGV[9]
local bad = fenced()
if bad then return bad end
if redis.call('EXISTS', K_META) == 0 then return {'gone'} end
local jfrom, system, actor = ARGV[10], ',"system":true', '0'
if mid ~= '' then
  if not holds(mid, link) then return {'superseded'} end
  jfrom, system, actor = mget(mid, 'jname'), '', mid
end
local id, frame = record('m', actor, '', function(id, ts)
  return '{"type":"message","id":' .. id .. ',"ts":' .. ts .. ',"from":' .. jfrom .. ',"text":' .. jtext .. system .. '}'
end)
return {'ok', id, frame, redis.call('HGET', K_META, 'display')}
