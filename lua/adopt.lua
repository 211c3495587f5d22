-- adopt.lua: takes a pending order that exists only in PostgreSQL (inserted with SQL after
-- its product was loaded) into Redis, so that its webhook and its expiry work as for any order.
--
-- KEYS[1] stock  KEYS[2] product  KEYS[3] order record  KEYS[4] pending  KEYS[5] users
-- ARGV[1] reference  ARGV[2] user ('' none)  ARGV[3] qty  ARGV[4] amount  ARGV[5] expires (ms)
-- ARGV[6] created (ms)
--
-- Returns {7} when the product is not loaded (load it: the load counts this order), {1} when
-- Redis already has the record, {0, shortfall} when adopted.
--
-- The live counter did not count this order (the load that built it ran before the order
-- existed), so adopting it takes its units from the reservable stock, which keeps the
-- conservation law. If fewer units are left than the order holds, the stock stops at zero and
-- the shortfall is returned for the caller to log: it never goes negative.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {7}
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {1}
end
local limited = (redis.call('HGET', KEYS[2], 'limit') or '') ~= ''
local user, qty = ARGV[2], tonumber(ARGV[3])
local counted = (limited and user ~= '' and '1') or '0'
redis.call('SET', KEYS[3], pack_record('pending', ARGV[3], ARGV[4], ARGV[5], ARGV[6], counted, user))
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1])
if counted == '1' then
  redis.call('HINCRBY', KEYS[5], user, qty)
end
local stock = tonumber(redis.call('GET', KEYS[1]))
local take = math.min(stock, qty)
redis.call('DECRBY', KEYS[1], take)
return {0, qty - take}
