-- lib.lua: helpers shared by the order scripts. Not a script of its own: the Rust side
-- (src/redis/scripts.rs) prepends it to pay.lua, fail.lua, expire.lua, adopt.lua and
-- reserve.lua before loading them, so every operation stays one atomic EVALSHA.
--
-- The order record is a hash with the fields
--   user  buyer id ('' when none)        qty  units           amt  amount in cents
--   st    pending | paid | payment_failed | expired           exp  expiry (Unix ms)
--   ct    creation (Unix ms)             uc   '1' when qty is counted in the users hash
-- Times come from Redis's own clock so that every instance sharing this Redis agrees.

local RECORD_FIELDS = {'user', 'qty', 'amt', 'st', 'exp', 'ct', 'uc'}

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integers as plain decimal text (tostring would switch to exponent form past 1e14).
local function int(x)
  return string.format('%d', x)
end

local function read_record(order_key)
  local r = redis.call('HMGET', order_key, unpack(RECORD_FIELDS))
  if not r[4] then
    return nil
  end
  return {user = r[1], qty = tonumber(r[2]), amt = r[3], st = r[4], exp = tonumber(r[5]),
          ct = r[6], uc = r[7]}
end

-- The reply every transition script returns: code, whether this call changed the order,
-- then the record as the Rust side decodes it (see decode_transition in scripts.rs).
local function record_reply(code, changed, rec)
  return {code, changed and 1 or 0, rec.st, rec.user, int(rec.qty), rec.amt, int(rec.exp), rec.ct}
end

-- Journals a change the writer owes PostgreSQL. One member per (order, state), so the writer
-- acknowledges exactly the state it committed with a plain ZREM, and a newer state of the
-- same order stays journaled until its own commit.
local function journal(journal_key, now, ref, state)
  redis.call('ZADD', journal_key, now, ref .. '|' .. state)
end

-- pending -> payment_failed | expired: the units go back to the reservable stock and to the
-- buyer's allowance, and the reference is journaled for the writer. The caller has checked
-- that the order is pending, which is what makes this happen at most once.
local function cancel(stock_key, order_key, pending_key, journal_key, users_key, ref, rec, reason, now)
  redis.call('HSET', order_key, 'st', reason)
  redis.call('INCRBY', stock_key, rec.qty)
  redis.call('ZREM', pending_key, ref)
  journal(journal_key, now, ref, reason)
  if rec.uc == '1' then
    redis.call('HINCRBY', users_key, rec.user, -rec.qty)
  end
  rec.st = reason
end
