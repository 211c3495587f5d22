-- cancel.lua: the buyer gives a pending order back, exactly once.
--
-- KEYS[1] stock  KEYS[2] order record  KEYS[3] pending  KEYS[4] journal  KEYS[5] users
-- ARGV[1] order reference  ARGV[2] the buyer asking ('' when anyone holding the reference may)
--
-- Returns {7} not loaded, {8} unknown order (or another buyer's: the same answer, so a
-- reference cannot be probed with a token), else record_reply (lib.lua) with
--   code 0  pending -> buyer_cancelled by this call, units and allowance returned (changed = 1)
--   code 1  already cancelled by its buyer: a repeat (changed = 0)
--   code 2  in another final state (paid, payment_failed, expired); a pending order past its
--           expiry is expired by this call first (changed = 1): expiry won, whatever the
--           reaper's timing, as in pay.lua and fail.lua.
--
-- Invariant: the units of an order return to the stock at most once; exactly one of pay,
-- fail, expire and cancel moves an order out of `pending`.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {7}
end
local rec = read_record(KEYS[2])
if not rec then
  return {8}
end
if ARGV[2] ~= '' and rec.user ~= ARGV[2] then
  return {8}
end
local now = now_ms()
if rec.st == 'pending' and rec.exp <= now then
  cancel(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], rec, 'expired', now)
  return record_reply(2, true, rec)
end
if rec.st == 'pending' then
  cancel(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], rec, 'buyer_cancelled', now)
  return record_reply(0, true, rec)
end
if rec.st == 'buyer_cancelled' then
  return record_reply(1, false, rec)
end
return record_reply(2, false, rec)
