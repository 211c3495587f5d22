-- sync.lua: copies a product's sold attributes from PostgreSQL into Redis (after an admin
-- change, or a change made with SQL), if the product is loaded and the copy is older.
--
-- KEYS[1] stock  KEYS[2] product
-- ARGV[1] revision (`products.attrs_rev`: per product strictly increasing in commit order,
-- never shared by two changes)  ARGV[2] name  ARGV[3] price_cents
-- ARGV[4] max_per_order  ARGV[5] per_user_limit ('' none)  ARGV[6] sale start (ms, '' none)
-- ARGV[7] sale end (ms, '' none)  ARGV[8] updated_at (RFC 3339)
--
-- Returns 0 when the product is not loaded or already has this revision (nothing changed),
-- 1 when the attributes were copied, 2 when the per-user limit was switched on or off: the
-- buyers' counts in Redis are then not what the new limit needs, nothing was copied, and the
-- caller must invalidate the product (it is rebuilt from PostgreSQL on next use).

if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local cur = redis.call('HMGET', KEYS[2], 'rev', 'limit')
if tonumber(cur[1] or '0') >= tonumber(ARGV[1]) then
  return 0
end
if ((cur[2] or '') == '') ~= (ARGV[5] == '') then
  return 2
end
redis.call('HSET', KEYS[2], 'rev', ARGV[1], 'name', ARGV[2], 'price', ARGV[3], 'max', ARGV[4],
           'limit', ARGV[5], 'starts', ARGV[6], 'ends', ARGV[7], 'updated', ARGV[8])
return 1
