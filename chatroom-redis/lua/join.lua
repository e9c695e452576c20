-- A fresh join. ARGV 7..: member id, link, name key, display name, name as JSON,
-- token, room display name, max members, max rooms, history window, rooms open in the
-- other partitions (a Redis Cluster's; 0 on a single Redis).
local mid, link, key, name, jname, token = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local display, max_members, max_rooms, window = ARGV[13], tonumber(ARGV[14]), tonumber(ARGV[15]), tonumber(ARGV[16])
local elsewhere = tonumber(ARGV[17] or '0')
local bad = fenced()
if bad then return bad end
if redis.call('HEXISTS', K_MEM, mid .. ':name') == 1 then return {'dup_member'} end
local exists = redis.call('EXISTS', K_META) == 1
if exists then
  local holder = redis.call('HGET', K_NAMES, key)
  if holder then return {'name_taken', mget(holder, 'name')} end
  if tonumber(redis.call('HGET', K_META, 'n')) >= max_members then return {'room_full'} end
else
  if redis.call('ZCARD', K_ROOMS) + elsewhere >= max_rooms then return {'too_many_rooms'} end
  -- Epochs start from the clock, so that a data set that Redis lost and began again
  -- does not reuse the epochs of the rooms that nodes still remember.
  if redis.call('EXISTS', K_EPOCH) == 0 then redis.call('SET', K_EPOCH, num(now)) end
  local epoch = redis.call('INCR', K_EPOCH)
  redis.call('DEL', K_EV, K_NAMES, K_ORDER, K_TOK, K_AWAY, K_MEM)
  redis.call('HSET', K_META, 'display', display, 'epoch', epoch, 'seq', 0, 'ts', 0, 'n', 0, 'jn', 0, 'gen', 0)
  redis.call('HSET', K_RDISP, room, display)
end
local n = redis.call('HINCRBY', K_META, 'n', 1)
local jn = redis.call('HINCRBY', K_META, 'jn', 1)
local tok = redis.sha1hex(token)
redis.call('HSET', K_NAMES, key, mid)
redis.call('ZADD', K_ORDER, jn, mid)
redis.call('HSET', K_TOK, tok, mid)
redis.call('HSET', K_MEM, mid .. ':name', name, mid .. ':jname', jname, mid .. ':key', key,
  mid .. ':node', node, mid .. ':link', link, mid .. ':state', 'p', mid .. ':joined', now, mid .. ':tok', tok)
redis.call('ZADD', K_ROOMS, n, room)
redis.call('SADD', K_NODEROOMS, room)
local id = record('j', mid, '', function(id, ts)
  return '{"type":"joined","id":' .. id .. ',"ts":' .. ts .. ',"name":' .. jname .. '}'
end)
local _, names, frames = welcome(nil, window)
return {'ok', redis.call('HGET', K_META, 'epoch'), id, redis.call('HGET', K_META, 'display'), names, frames, 0}
