-- invalidate.lua: forgets what of a product Redis may hold stale, after Redis restarted from
-- a snapshot or an AOF that can be up to a second behind what was acknowledged.
--
-- KEYS[1] stock  KEYS[2] pending  KEYS[3] journal  KEYS[4] users
-- ARGV[1] the order-record key prefix of this product (`<pfx>:{p:P}:order:`)
--
-- Deletes the stock counter and the per-user counts (the next request reloads them from
-- PostgreSQL after a writer barrier, see load.lua), and the records of pending orders that are
-- not in the journal: PostgreSQL has those, possibly in a newer state (a payment whose Redis
-- write was lost), and load.lua restores the ones still pending. Journaled orders are changes
-- PostgreSQL may not have yet: they stay for the writer's journal replay.
--
-- Returns the number of order records removed.

-- References with a journaled reservation: members are `<ref>,<ref>,...|pending` for
-- reservations and `<ref>|<state>` for later changes (see lib.lua and reserve.lua).
local journaled = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
  local list, state = string.match(member, '^(.*)|([^|]*)$')
  if state == 'pending' then
    for ref in string.gmatch(list, '[^,]+') do
      journaled[ref] = true
    end
  end
end
local removed = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local kept = false
  for _, ref in ipairs(member_refs(member)) do
    if journaled[ref] then
      kept = true
    else
      redis.call('DEL', ARGV[1] .. ref)
      removed = removed + 1
    end
  end
  if not kept then
    redis.call('ZREM', KEYS[2], member)
  end
end
redis.call('DEL', KEYS[1], KEYS[4])
return removed
