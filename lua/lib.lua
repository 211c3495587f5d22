-- lib.lua: helpers shared by the order scripts. Not a script of its own: the Rust side
-- (src/redis/scripts.rs) prepends it to every script that touches order records, so each
-- operation stays one atomic EVALSHA.
--
-- The order record is one string, `st|qty|amt|exp|ct|uc|user`:
--   st    pending | paid | payment_failed | expired | buyer_cancelled
--   qty   units            amt  amount in cents
--   exp   expiry (Unix ms) ct   creation (Unix ms)
--   uc    '1' when qty is counted in the users hash
--   user  buyer id ('' when none); last, so it may contain anything, '|' included
-- One string rather than a hash because a batch of reservations then writes all its records
-- with one MSET: inside a script every redis.call has a fixed cost of a few microseconds, so
-- calls per batch, not per order, are what keep a reservation cheap.
-- Times come from Redis's own clock so that every instance sharing this Redis agrees.
--
-- The pending set of a product holds, scored by expiry, one member per reserve.lua call: the
-- references of that call's reservations joined by NUL (a byte no reference can hold, since
-- PostgreSQL text cannot); orders that load.lua or adopt.lua restore get a member of their
-- own. A member leaves the set when no order in it is pending any more: pay and fail remove
-- single members at once, expire.lua removes any member once it finds nothing pending in it.

-- The references of a pending-set member.
local function member_refs(member)
  local refs = {}
  for ref in string.gmatch(member, '[^%z]+') do
    refs[#refs + 1] = ref
  end
  return refs
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Integers as plain decimal text (tostring would switch to exponent form past 1e14).
local function int(x)
  return string.format('%d', x)
end

local function pack_record(st, qty, amt, exp, ct, uc, user)
  return st .. '|' .. qty .. '|' .. amt .. '|' .. exp .. '|' .. ct .. '|' .. uc .. '|' .. user
end

local function parse_record(v)
  if not v then
    return nil
  end
  local st, qty, amt, exp, ct, uc, user =
    string.match(v, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  if not st then
    return nil
  end
  return {st = st, qty = tonumber(qty), amt = amt, exp = tonumber(exp), ct = ct, uc = uc,
          user = user, rest = string.sub(v, #st + 1)}
end

local function read_record(order_key)
  return parse_record(redis.call('GET', order_key))
end

-- Rewrites the state of a record read by read_record; everything else is kept as it was.
local function set_state(order_key, rec, st)
  redis.call('SET', order_key, st .. rec.rest, 'KEEPTTL')
  rec.st = st
end

-- Appends the six fields of a record to a reply, as the Rust side decodes them
-- (record_fields in scripts.rs).
local function push_record(out, rec)
  out[#out + 1] = rec.st
  out[#out + 1] = rec.user
  out[#out + 1] = int(rec.qty)
  out[#out + 1] = rec.amt
  out[#out + 1] = int(rec.exp)
  out[#out + 1] = rec.ct
  return out
end

-- The reply every transition script returns: code, whether this call changed the order,
-- then the record (see decode_transition in scripts.rs).
local function record_reply(code, changed, rec)
  return push_record({code, changed and 1 or 0}, rec)
end

-- Journals a change the writer owes PostgreSQL. One member per (order, state), so the writer
-- acknowledges exactly the state it committed with a plain ZREM, and a newer state of the
-- same order stays journaled until its own commit.
local function journal(journal_key, now, ref, state)
  redis.call('ZADD', journal_key, now, ref .. '|' .. state)
end

-- pending -> payment_failed | expired | buyer_cancelled: the units go back to the reservable
-- stock and to the buyer's allowance, and the change is journaled for the writer. The caller has checked that
-- the order is pending, which is what makes this happen at most once.
local function cancel(stock_key, order_key, pending_key, journal_key, users_key, ref, rec, reason, now)
  set_state(order_key, rec, reason)
  redis.call('INCRBY', stock_key, rec.qty)
  redis.call('ZREM', pending_key, ref)
  journal(journal_key, now, ref, reason)
  if rec.uc == '1' then
    -- A buyer holding nothing is forgotten, so the hash only grows with active buyers.
    if redis.call('HINCRBY', users_key, rec.user, -rec.qty) <= 0 then
      redis.call('HDEL', users_key, rec.user)
    end
  end
end
