-- ack.lua: the writer acknowledges orders whose state is committed to PostgreSQL.
--
-- KEYS[1] journal of one product, then KEYS[1 + i] the record of the i-th order
-- ARGV[1] seconds a final record stays in Redis after its commit, then per order i:
-- ARGV[2i] reference, ARGV[2i + 1] the state that was committed (pending, paid,
-- payment_failed, expired)
--
-- A reference leaves the journal only if the record still holds the committed state: when a
-- payment or an expiry moved it on meanwhile, the newer state is still owed to PostgreSQL and
-- the entry stays (its own message, or a replay, will commit and acknowledge it). Final
-- records get an expiry, so Redis does not grow with the order history; PostgreSQL keeps it.
--
-- Returns the number of references removed from the journal.

local ttl = tonumber(ARGV[1])
local removed = 0
for i = 1, #KEYS - 1 do
  local ref, committed = ARGV[2 * i], ARGV[2 * i + 1]
  local order_key = KEYS[1 + i]
  local st = redis.call('HGET', order_key, 'st')
  if (not st) or st == committed then
    removed = removed + redis.call('ZREM', KEYS[1], ref)
    if st and committed ~= 'pending' then
      redis.call('EXPIRE', order_key, ttl)
    end
  end
end
return removed
