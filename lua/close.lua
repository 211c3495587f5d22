-- close.lua: ends a product's sale now, by Redis's clock: the clock that decides every
-- reservation (reserve.lua), so no order is ever created after the end that is stored.
--
-- KEYS[1] stock  KEYS[2] product
--
-- Returns {7} when the product is not loaded (load it first); {1, ends} when the sale had
-- ended already (nothing changed: the earlier end stays); else {0, ends}: the sale ends at
-- the end of the current millisecond (`now + 1`: a reservation made earlier in this same
-- millisecond has `created` = now, and must be before the end), and an upcoming sale (a start
-- not yet reached) loses its start, so it never opens.
--
-- The caller then stores the same end in PostgreSQL (whose sync, with a newer revision, writes
-- the same values back). If that write never happens (a crash), Redis stays closed while
-- PostgreSQL is not, until the admin closes again (which stores the end kept here) or the
-- product is rebuilt from PostgreSQL.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {7}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = redis.call('HMGET', KEYS[2], 'starts', 'ends')
local starts, ends = tonumber(f[1] or ''), tonumber(f[2] or '')
if ends and ends <= now then
  return {1, string.format('%d', ends)}
end
local new_end = string.format('%d', now + 1)
if starts and starts >= now then
  redis.call('HSET', KEYS[2], 'starts', '', 'ends', new_end)
else
  redis.call('HSET', KEYS[2], 'ends', new_end)
end
return {0, new_end}
