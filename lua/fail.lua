-- fail.lua: a failed payment cancels a pending order and gives its units back, exactly once.
--
-- KEYS[1] stock  KEYS[2] order record  KEYS[3] pending  KEYS[4] journal  KEYS[5] users
-- ARGV[1] order reference
--
-- Returns {7} not loaded, {8} unknown order, else record_reply (lib.lua) with
--   code 0  pending -> payment_failed by this call, units returned (changed = 1)
--   code 1  already cancelled by a failed payment: a repeat (changed = 0)
--   code 2  in another final state (paid, or expired); a pending order past its expiry is
--           expired by this call first (changed = 1), so the units come back once, as expiry.
--
-- Invariant: the units of an order return to the stock at most once.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {7}
end
local rec = read_record(KEYS[2])
if not rec then
  return {8}
end
local now = now_ms()
if rec.st == 'pending' then
  local reason = 'payment_failed'
  if rec.exp <= now then
    reason = 'expired'
  end
  cancel(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], rec, reason, now)
  if reason == 'expired' then
    return record_reply(2, true, rec)
  end
  return record_reply(0, true, rec)
end
if rec.st == 'payment_failed' then
  return record_reply(1, false, rec)
end
return record_reply(2, false, rec)
