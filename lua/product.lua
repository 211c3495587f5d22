-- product.lua: reads a product and its live reservable stock in one step.
--
-- KEYS[1] stock  KEYS[2] product
-- Returns 7 when the product is not loaded, else
-- {stock, name, price, max, limit ('' none), created, updated, starts ('' none),
--  ends ('' none), now}: the window in Unix ms and Redis's clock, which decides the state.

local stock = redis.call('GET', KEYS[1])
if not stock then
  return 7
end
local m = redis.call('HMGET', KEYS[2], 'name', 'price', 'max', 'limit', 'created', 'updated',
                     'starts', 'ends')
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {stock, m[1], m[2], m[3], m[4] or '', m[5], m[6], m[7] or '', m[8] or '',
        string.format('%d', now)}
