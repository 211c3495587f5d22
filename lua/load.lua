-- load.lua: installs a product into Redis from PostgreSQL, only if it is not there.
--
-- KEYS[1] stock  KEYS[2] product  KEYS[3] pending  KEYS[4] users  KEYS[5] journal
-- then KEYS[5 + i] the record of the i-th pending order
-- ARGV[1] name  ARGV[2] price_cents  ARGV[3] max_per_order  ARGV[4] per_user_limit ('' none)
-- ARGV[5] created_at  ARGV[6] updated_at (RFC 3339)  ARGV[7] reservable stock per PostgreSQL
-- ARGV[8] the order-record key prefix of this product (`<pfx>:{p:P}:order:`)
-- ARGV[9] sale start, ARGV[10] sale end (Unix ms, '' for none), ARGV[11] the revision of the
-- sold attributes (`products.attrs_rev`; see sync.lua)
-- ARGV[12] number of pending orders p, then 6 values each:
--   reference, user ('' none), qty, amount, expires (ms), created (ms)
-- then the number of buyers u, then 2 values each: user id, units pending or paid;
-- then the number of restocks a PostgreSQL has applied to this product, then their op ids.
--
-- The caller computed ARGV[7] after a writer barrier, as PostgreSQL stock minus the units of
-- PostgreSQL's pending orders. Orders pending in Redis that PostgreSQL does not have yet (a
-- reservation whose message was still on its way, or one that only the journal holds after
-- a crash) hold units too: they are subtracted here, atomically with the install, so no unit
-- is counted as free twice. Likewise a restock still in the journal that PostgreSQL has not
-- applied (its op id is not in the list) is added: the writer applies it later.
--
-- Returns {1, stock} when installed, {0} when the stock key already existed: a live counter is
-- never overwritten, and two workers racing to load the same product are harmless.

if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0}
end
local limited = ARGV[4] ~= ''
local stock = tonumber(ARGV[7])
redis.call('HSET', KEYS[2], 'name', ARGV[1], 'price', ARGV[2], 'max', ARGV[3], 'limit', ARGV[4],
           'created', ARGV[5], 'updated', ARGV[6], 'starts', ARGV[9], 'ends', ARGV[10],
           'rev', ARGV[11])

-- Pending-set members Redis already holds, before PostgreSQL's orders are added.
local redis_pending = redis.call('ZRANGE', KEYS[3], 0, -1)

local p = tonumber(ARGV[12])
local in_pg = {}
for i = 1, p do
  local b = 12 + (i - 1) * 6
  local ref = ARGV[b + 1]
  in_pg[ref] = true
  local order_key = KEYS[5 + i]
  -- A record that survived (only some keys were lost) is the more recent truth.
  if redis.call('EXISTS', order_key) == 0 then
    local user = ARGV[b + 2]
    local counted = (limited and user ~= '' and '1') or '0'
    redis.call('SET', order_key,
               pack_record('pending', ARGV[b + 3], ARGV[b + 4], ARGV[b + 5], ARGV[b + 6], counted, user))
    redis.call('ZADD', KEYS[3], ARGV[b + 5], ref)
  end
end

redis.call('DEL', KEYS[4])
local u_at = 12 + p * 6 + 1
if limited then
  local u = tonumber(ARGV[u_at])
  for j = 1, u do
    redis.call('HSET', KEYS[4], ARGV[u_at + 2 * j - 1], ARGV[u_at + 2 * j])
  end
end

for _, member in ipairs(redis_pending) do
  local live = false
  for _, ref in ipairs(member_refs(member)) do
    local key = ARGV[8] .. ref
    local rec = read_record(key)
    if rec and rec.st == 'pending' then
      live = true
      if not in_pg[ref] then
        stock = stock - rec.qty
        if limited and rec.user ~= '' then
          redis.call('HINCRBY', KEYS[4], rec.user, rec.qty)
          if rec.uc ~= '1' then
            redis.call('SET', key, pack_record(rec.st, int(rec.qty), rec.amt, int(rec.exp), rec.ct, '1', rec.user))
          end
        end
      end
    end
  end
  if not live then
    redis.call('ZREM', KEYS[3], member)
  end
end
local a_at = u_at + 1 + 2 * tonumber(ARGV[u_at])
local applied = {}
for j = 1, tonumber(ARGV[a_at]) do
  applied[ARGV[a_at + j]] = true
end
for _, member in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
  local op, delta = string.match(member, '^restock|([^|]+)|(-?%d+)$')
  if op and not applied[op] then
    stock = stock + tonumber(delta)
  end
end
if stock < 0 then
  stock = 0
end
redis.call('SET', KEYS[1], string.format('%d', stock))
return {1, stock}
