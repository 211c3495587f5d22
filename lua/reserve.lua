-- reserve.lua: reserve units for one or more buyers of one product, atomically.
--
-- KEYS[1] stock     reservable units (absent: product not loaded into Redis)
-- KEYS[2] product   hash: name, price, max, limit (per-user limit, '' for none), created, updated
-- KEYS[3] pending   zset: references -> expiry (Unix ms); this call adds one member for all
--                   its reservations, their references joined by NUL (see lib.lua)
-- KEYS[4] journal   zset: '<reference>|<state>' -> time of a change not yet in PostgreSQL
-- KEYS[5] users     hash: user id -> units pending or paid (kept only for limited products)
-- then per request i (1-based): KEYS[4 + 2i] order record, KEYS[5 + 2i] the key remembering
-- its Idempotency-Key (named by a hash of the buyer and the key, so scoped to the buyer and
-- this product; another key of this product when the request has none)
-- ARGV[1] hold time in ms; ARGV[2] lifetime of idempotency entries in s; ARGV[3] number of
-- requests n; then per request i: ARGV[4i] reference, ARGV[4i+1] qty, ARGV[4i+2] user id
-- ('' for none), ARGV[4i+3] '1' when an Idempotency-Key was given.
--
-- Returns the integer 7 when the product is not loaded (nothing changed), else the flat array
-- {expires, created, journal member ('' when nothing was reserved), reply 1, ..., reply n}
-- where expires and created (Unix ms) hold for every reservation of the call, and each reply
-- is one string:
--   '0|<amount>'                                  reserved
--   '1|<ref>|<qty>|<amount>|<expires>|<created>'  idempotent replay: nothing reserved
--   '2' insufficient stock   '3' per-user limit reached   '4' user id required
--   '5|<max_per_order>' qty above the product's maximum   '6' idempotency key reused
--   '7|<starts>|<now>' the sale has not started (Unix ms)   '8' the sale has ended
-- The window is decided here, against Redis's clock, so every worker and instance opens and
-- closes at the same moment. A replay of an order made in the window is answered after it.
-- (Strings, not nested arrays: converting a Lua table to a reply costs about a microsecond.)
--
-- Invariant: stock never goes below zero; a unit is taken only together with the order
-- record, its pending entry, the journal entry and the buyer's count, so the writer (through
-- the journal) and the reaper (through the pending set) always find what was reserved.
-- Requests are decided one after the other, exactly as separate calls would; what they write
-- is gathered and written with one MSET, one pending-set member and one journal member for
-- the whole batch (`<ref>,<ref>,...|pending`), which the writer removes once every order in it
-- is committed. (A member per order would be a sorted-set insert per reservation, ~1 µs of
-- Redis time each.)

local stock = redis.call('GET', KEYS[1])
if not stock then
  return 7
end
stock = tonumber(stock)
local meta = redis.call('HMGET', KEYS[2], 'price', 'max', 'limit', 'starts', 'ends')
local price, max_qty = tonumber(meta[1]), tonumber(meta[2])
local limit = tonumber(meta[3] or '')
local starts, ends = tonumber(meta[4] or ''), tonumber(meta[5] or '')
local hold, idem_ttl, n = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local now_s, exp_s = int(now), int(now + hold)
local out = {}
local records, refs = {}, {}
-- Idempotency keys set earlier in this batch (a retry can arrive in the same batch).
local idem_seen = {}

for i = 1, n do
  local order_key, idem_key = KEYS[4 + 2 * i], KEYS[5 + 2 * i]
  local ref, qty_s, user = ARGV[4 * i], ARGV[4 * i + 1], ARGV[4 * i + 2]
  local qty = tonumber(qty_s)
  local has_idem = ARGV[4 * i + 3] == '1'
  local r
  if has_idem then
    -- '<ref>|<qty>|<amount>|<expires>|<created>' of the reservation the key made.
    local prev = idem_seen[idem_key] or redis.call('GET', idem_key)
    if prev then
      if tonumber(string.match(prev, '^[^|]*|([^|]*)|')) == qty then
        r = '1|' .. prev
      else
        r = '6'
      end
    end
  end
  if not r then
    if starts and now < starts then
      r = '7|' .. int(starts) .. '|' .. now_s
    elseif ends and now >= ends then
      r = '8'
    elseif qty > max_qty then
      r = '5|' .. meta[2]
    elseif limit and user == '' then
      r = '4'
    elseif limit and tonumber(redis.call('HGET', KEYS[5], user) or '0') + qty > limit then
      r = '3'
    elseif stock < qty then
      r = '2'
    else
      stock = stock - qty
      local amount = int(price * qty)
      local counted = (limit and '1') or '0'
      records[#records + 1] = order_key
      records[#records + 1] = pack_record('pending', qty_s, amount, exp_s, now_s, counted, user)
      refs[#refs + 1] = ref
      if limit then
        redis.call('HINCRBY', KEYS[5], user, qty)
      end
      if has_idem then
        local remembered = ref .. '|' .. qty_s .. '|' .. amount .. '|' .. exp_s .. '|' .. now_s
        redis.call('SET', idem_key, remembered, 'EX', idem_ttl)
        idem_seen[idem_key] = remembered
      end
      r = '0|' .. amount
    end
  end
  out[3 + i] = r
end

out[1], out[2], out[3] = exp_s, now_s, ''
if #records > 0 then
  redis.call('MSET', unpack(records))
  redis.call('ZADD', KEYS[3], exp_s, table.concat(refs, '\0'))
  out[3] = table.concat(refs, ',') .. '|pending'
  redis.call('ZADD', KEYS[4], now_s, out[3])
  redis.call('SET', KEYS[1], int(stock))
end
return out
