-- Shared by every room script. KEYS and ARGV 1..6 are the same for all of them:
-- KEYS: meta, ev, names, order, tok, away, mem, rooms, rdisp, due, epoch, instance,
--       noderooms (the calling node's rooms), dead (tombstones of reaped nodes)
-- ARGV: instance id, deadline (Redis ms; 0: none), node, channel, stream cap, room
-- Every check comes before the first write: a Lua error after a write does not roll
-- it back.
local K_META, K_EV, K_NAMES, K_ORDER, K_TOK, K_AWAY, K_MEM = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local K_ROOMS, K_RDISP, K_DUE, K_EPOCH, K_INSTANCE, K_NODEROOMS, K_DEAD = KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13], KEYS[14]
local instance, deadline, node, channel, cap, room = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local MEMBER_FIELDS = {'name', 'jname', 'key', 'node', 'link', 'state', 'until', 'joined', 'tok'}

-- 'lost' when Redis lost its data (the instance id changed), 'late' past the caller's
-- deadline (the caller has already answered `unavailable`), 'reaped' when the others
-- took the calling node for dead (it must not act under that id any more).
local function fenced()
  if redis.call('GET', K_INSTANCE) ~= instance then return {'lost'} end
  if deadline > 0 and now > deadline then return {'late'} end
  if redis.call('HEXISTS', K_DEAD, node) == 1 then return {'reaped'} end
  return nil
end

local function mget(mid, f)
  return redis.call('HGET', K_MEM, mid .. ':' .. f)
end

-- Whether `mid` is present and held by the caller's link on the caller's node (a link
-- cut off as a slow consumer, or taken over, holds nothing).
local function holds(mid, link)
  return mget(mid, 'node') == node and mget(mid, 'link') == link and mget(mid, 'state') == 'p'
end

local function num(n)
  return string.format('%d', n)
end

-- Appends an event to the stream and publishes it: takes the next id and a timestamp
-- that never goes back within the room.
local function record(kind, actor, reason, build)
  local id = redis.call('HINCRBY', K_META, 'seq', 1)
  local ts = now
  local last = tonumber(redis.call('HGET', K_META, 'ts') or '0')
  if ts < last then ts = last end
  redis.call('HSET', K_META, 'ts', ts)
  local frame = build(num(id), num(ts))
  local epoch = redis.call('HGET', K_META, 'epoch')
  redis.call('XADD', K_EV, 'MAXLEN', '~', cap, num(id) .. '-1', 'f', frame, 'a', actor, 'k', kind, 'r', reason)
  redis.call('PUBLISH', channel, 'E ' .. epoch .. ' ' .. num(id) .. ' ' .. actor .. ' ' .. kind .. ' ' .. num(#reason) .. '\n' .. reason .. frame)
  return id, frame
end

-- Removes member `mid` with a `left` event (kind 'l' leave, 'k' kick, 'x' expiry);
-- returns the event id, how many members are left, and the event's frame.
local function remove(mid, kind, reason)
  local key, jname, tok = mget(mid, 'key'), mget(mid, 'jname') or '""', mget(mid, 'tok')
  if key then redis.call('HDEL', K_NAMES, key) end
  redis.call('ZREM', K_ORDER, mid)
  if tok then redis.call('HDEL', K_TOK, tok) end
  redis.call('ZREM', K_AWAY, mid)
  local fields = {}
  for i, f in ipairs(MEMBER_FIELDS) do fields[i] = mid .. ':' .. f end
  redis.call('HDEL', K_MEM, unpack(fields))
  local n = redis.call('HINCRBY', K_META, 'n', -1)
  local id, frame = record(kind, mid, reason, function(id, ts)
    return '{"type":"left","id":' .. id .. ',"ts":' .. ts .. ',"name":' .. jname .. '}'
  end)
  return id, n, frame
end

-- Brings the indexes up to date after members left or went away; frees an empty room.
local function settle(n)
  if n <= 0 then
    redis.call('DEL', K_META, K_EV, K_NAMES, K_ORDER, K_TOK, K_AWAY, K_MEM)
    redis.call('ZREM', K_ROOMS, room)
    redis.call('HDEL', K_RDISP, room)
    redis.call('ZREM', K_DUE, room)
  else
    redis.call('ZADD', K_ROOMS, n, room)
    local first = redis.call('ZRANGE', K_AWAY, 0, 0, 'WITHSCORES')
    if first[2] then
      redis.call('ZADD', K_DUE, first[2], room)
    else
      redis.call('ZREM', K_DUE, room)
    end
  end
end

-- A welcome's members (display names in join order), history (the last `window`
-- events, or those after `since`) and gap, as the single-node rules give them.
local function welcome(since, window)
  local seq = tonumber(redis.call('HGET', K_META, 'seq'))
  local held = seq
  if held > window then held = window end
  local oldest = seq - held + 1
  local from, gap = oldest, 0
  if since then
    if since > seq then
      -- The client saw events this room no longer has (the store lost its tail).
      gap = 1
    elseif since == seq then
      from = seq + 1
    else
      if since + 1 < oldest then gap = 1 end
      if since + 1 > from then from = since + 1 end
    end
  end
  local frames = {}
  if from <= seq then
    local entries = redis.call('XRANGE', K_EV, num(from) .. '-1', num(seq) .. '-1')
    for i, e in ipairs(entries) do frames[i] = e[2][2] end
    if #entries < seq - from + 1 then gap = 1 end
  end
  local names = {}
  for i, m in ipairs(redis.call('ZRANGE', K_ORDER, 0, -1)) do names[i] = mget(m, 'name') end
  return seq, names, frames, gap
end
