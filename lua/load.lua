-- load.lua: installs a product into Redis from PostgreSQL, only if it is not there.
--
-- KEYS[1] stock  KEYS[2] product  KEYS[3] pending  KEYS[4] users
-- then KEYS[4 + i] the record of the i-th pending order
-- ARGV[1] name  ARGV[2] price_cents  ARGV[3] max_per_order  ARGV[4] per_user_limit ('' none)
-- ARGV[5] created_at  ARGV[6] updated_at (RFC 3339)  ARGV[7] reservable stock
-- ARGV[8] number of pending orders p, then 6 values each:
--   reference, user ('' none), qty, amount, expires (ms), created (ms)
-- then the number of buyers u, then 2 values each: user id, units pending or paid.
--
-- The caller computed the stock after a writer barrier, as PostgreSQL stock minus the units
-- of pending orders, so reservations still in flight were already in PostgreSQL.
--
-- Returns 1 when installed, 0 when the stock key already existed: a live counter is never
-- overwritten, and two workers racing to load the same product are harmless.

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local limited = ARGV[4] ~= ''
redis.call('HSET', KEYS[2], 'name', ARGV[1], 'price', ARGV[2], 'max', ARGV[3], 'limit', ARGV[4],
           'created', ARGV[5], 'updated', ARGV[6])
local p = tonumber(ARGV[8])
for i = 1, p do
  local b = 8 + (i - 1) * 6
  local ref = ARGV[b + 1]
  local order_key = KEYS[4 + i]
  -- A record that survived (only some keys were lost) is the more recent truth.
  if redis.call('EXISTS', order_key) == 0 then
    local user = ARGV[b + 2]
    local counted = (limited and user ~= '' and '1') or '0'
    redis.call('HSET', order_key, 'user', user, 'qty', ARGV[b + 3], 'amt', ARGV[b + 4],
               'st', 'pending', 'exp', ARGV[b + 5], 'ct', ARGV[b + 6], 'uc', counted)
    redis.call('ZADD', KEYS[3], ARGV[b + 5], ref)
  end
end
redis.call('DEL', KEYS[4])
if limited then
  local u_at = 8 + p * 6 + 1
  local u = tonumber(ARGV[u_at])
  for j = 1, u do
    redis.call('HSET', KEYS[4], ARGV[u_at + 2 * j - 1], ARGV[u_at + 2 * j])
  end
end
redis.call('SET', KEYS[1], ARGV[7])
return 1
