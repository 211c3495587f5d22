-- restock.lua: the admin API moves a product's reservable stock by a delta, journaled for
-- the writer, which applies the same delta to `products.stock` once per operation id.
--
-- KEYS[1] stock  KEYS[2] journal
-- ARGV[1] operation id (a ULID, unique per restock)  ARGV[2] delta (non-zero integer)
--
-- Returns {7} when the product is not loaded (load it first), {2, stock} when a negative
-- delta asks for more units than are reservable (nothing changed), else {0, stock after}.
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
stock = redis.call('INCRBY', KEYS[1], delta)
redis.call('ZADD', KEYS[2], now_ms(), 'restock|' .. ARGV[1] .. '|' .. ARGV[2])
return {0, stock}
