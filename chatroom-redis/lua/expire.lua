-- The reaper: members of a dead node become away (until its lease end + grace), and
-- away members whose grace ran out leave, in join order. Picks the members itself,
-- under Redis time. ARGV 7..: dead node ('' for none), its lease end (ms), grace (ms),
-- '1' to end every away member's grace now (tests).
local dead, lease_end, grace, force = ARGV[7], tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10] == '1'

local bad = fenced()
if bad then return bad end
if redis.call('EXISTS', K_META) == 0 then
  redis.call('ZREM', K_DUE, room)
  return {'gone'}
end
local order = redis.call('ZRANGE', K_ORDER, 0, -1)
if dead ~= '' then
  for _, mid in ipairs(order) do
    if mget(mid, 'node') == dead and mget(mid, 'state') == 'p' then
      local until_ms = lease_end + grace
      redis.call('HSET', K_MEM, mid .. ':state', 'a', mid .. ':until', until_ms)
      redis.call('ZADD', K_AWAY, until_ms, mid)
    end
  end
end
local n = tonumber(redis.call('HGET', K_META, 'n'))
local display = redis.call('HGET', K_META, 'display')
local left = {}
for _, mid in ipairs(order) do
  local score = redis.call('ZSCORE', K_AWAY, mid)
  if score and (force or tonumber(score) <= now) then
    local name = mget(mid, 'name')
    local id, frame
    id, n, frame = remove(mid, 'x', '')
    left[#left + 1] = {mid, name, id, frame}
  end
end
settle(n)
return {'ok', left, display}
