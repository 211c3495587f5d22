-- expire.lua: the reaper cancels the reservations of one pending-set member whose hold has
-- passed, except those a payment or a failure settled first.
--
-- KEYS[1] stock  KEYS[2] pending  KEYS[3] journal  KEYS[4] users
-- ARGV[1] the pending-set member (references joined by NUL, see lib.lua)
-- ARGV[2] the order-record key prefix of this product (`<pfx>:{p:P}:order:`)
--
-- Returns {7} when the product is not loaded (nothing changed), else
--   {retry, ref 1, state, user, qty, amount, expires, created, ref 2, ...}
-- with the seven fields of each order this call expired (units returned, journaled), and
-- retry = the earliest expiry (Unix ms) of the orders still pending but not yet due by
-- Redis's clock (the caller's clock ran ahead: re-arm then), or 0 when none is left: the
-- member has then left the pending set.
--
-- Invariant: the same as fail.lua; whichever of pay, fail and expire runs first wins, and an
-- order's units come back at most once.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {7}
end
local now = now_ms()
local out = {0}
local retry = nil
for _, ref in ipairs(member_refs(ARGV[1])) do
  local key = ARGV[2] .. ref
  local rec = read_record(key)
  if rec and rec.st == 'pending' then
    if rec.exp > now then
      if not retry or rec.exp < retry then
        retry = rec.exp
      end
    else
      cancel(KEYS[1], key, KEYS[2], KEYS[3], KEYS[4], ref, rec, 'expired', now)
      out[#out + 1] = ref
      push_record(out, rec)
    end
  end
end
if retry then
  out[1] = int(retry)
else
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return out
