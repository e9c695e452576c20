-- The cluster's room rules (limits every node must share: history, grace, caps,
-- lengths) are kept at one key. `rules_differ` returns the stored rules when they
-- differ from `mine` while another node is alive (a node holding a lease that has
-- not run out); otherwise the caller may adopt `mine`.
local function rules_differ(nodes_key, rules_key, me, mine, now)
  local stored = redis.call('GET', rules_key)
  if not stored or stored == mine then return nil end
  for _, n in ipairs(redis.call('ZRANGEBYSCORE', nodes_key, '(' .. now, '+inf')) do
    if n ~= me then return stored end
  end
  return nil
end
