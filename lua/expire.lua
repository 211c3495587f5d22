-- expire.lua: the reaper cancels a reservation whose hold has passed, unless a payment or a
-- failure came first.
--
-- KEYS[1] stock  KEYS[2] order record  KEYS[3] pending  KEYS[4] journal  KEYS[5] users
-- ARGV[1] order reference
--
-- Returns {7} not loaded, {8} unknown order, {9, expires} still pending but not yet due (the
-- caller's clock ran ahead of Redis's: re-arm), else record_reply (lib.lua) with
--   code 0  pending -> expired by this call, units returned (changed = 1)
--   code 2  already final: payment or failure won, nothing changes
--
-- Invariant: the same as fail.lua; whichever of pay, fail and expire runs first wins.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {7}
end
local rec = read_record(KEYS[2])
if not rec then
  redis.call('ZREM', KEYS[3], ARGV[1])
  return {8}
end
if rec.st ~= 'pending' then
  return record_reply(2, false, rec)
end
local now = now_ms()
if rec.exp > now then
  return {9, int(rec.exp)}
end
cancel(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], rec, 'expired', now)
return record_reply(0, true, rec)
