-- pay.lua: a successful payment moves a pending order to paid, exactly once.
--
-- KEYS[1] stock  KEYS[2] order record  KEYS[3] pending  KEYS[4] journal  KEYS[5] users
-- ARGV[1] order reference
--
-- Returns {7} when the product is not loaded, {8} when the order is unknown to Redis, else
-- {code, changed, state, user, qty, amount, expires, created} (record_reply in lib.lua) with
--   code 0  pending -> paid by this call (changed = 1)
--   code 1  already paid: a repeat (changed = 0)
--   code 2  cancelled (payment_failed or expired): the payment came too late. If the order was
--           still pending but past its expiry, this call expires it first (changed = 1):
--           expiry won, whatever the reaper's timing.
--
-- Invariant: paid units never come back to the stock; an order leaves `pending` once.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {7}
end
local rec = read_record(KEYS[2])
if not rec then
  return {8}
end
local now = now_ms()
if rec.st == 'pending' and rec.exp <= now then
  cancel(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], rec, 'expired', now)
  return record_reply(2, true, rec)
end
if rec.st == 'pending' then
  set_state(KEYS[2], rec, 'paid')
  redis.call('ZREM', KEYS[3], ARGV[1])
  journal(KEYS[4], now, ARGV[1], 'paid')
  return record_reply(0, true, rec)
end
if rec.st == 'paid' then
  return record_reply(1, false, rec)
end
return record_reply(2, false, rec)
