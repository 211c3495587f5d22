-- restock.lua: the admin API moves a product's reservable stock by a delta, journaled for
-- the writer, which applies the same delta to `products.stock` once per operation id.
--
-- KEYS[1] stock  KEYS[2] journal
-- ARGV[1] operation id (a ULID, unique per restock)  ARGV[2] delta (non-zero integer)
-- ARGV[3] the most units the reservable stock may hold (the create cap, 10^12)
--
-- Returns {7} when the product is not loaded (load it first), {2, stock} when a negative
-- delta asks for more units than are reservable, {3, stock} when a positive one would take
-- the stock past the cap (nothing changed either way), else {0, stock after}. The cap keeps
-- every count far below 2^53, where Lua's numbers (doubles) would start losing units.
--
-- Invariant: the counter and the journal entry `restock|<op id>|<delta>` change in one step,
-- so Redis stock + pending units - unapplied journaled deltas = PostgreSQL stock at every
-- instant, and a crash before PostgreSQL has the delta replays it from the journal. Units
-- held by pending orders are never removed: a negative delta takes only reservable units.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {7}
end
local stock = tonumber(redis.call('GET', KEYS[1]))
local delta = tonumber(ARGV[2])
if stock + delta < 0 then
  return {2, stock}
end
if stock + delta > tonumber(ARGV[3]) then
  return {3, stock}
end
stock = redis.call('INCRBY', KEYS[1], delta)
redis.call('ZADD', KEYS[2], now_ms(), 'restock|' .. ARGV[1] .. '|' .. ARGV[2])
return {0, stock}
