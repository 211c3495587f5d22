-- wrk script for scripts/bench.sh --attack: a lookup flood of things that do not exist.
-- Each request is, at random with equal odds, one of
--   GET  /api/orders/<reference>  a made-up reference: half `<random product id>-<26
--                                 Crockford base-32 characters>` (the server's shape), half
--                                 26 such characters alone
--   GET  /api/products/<id>       a random id between 10^6 and 2*10^9 (no such product)
--   POST /api/orders              qty 1 of such a random unknown product
-- so neither the server's per-core memory of misses nor Redis can answer: each one is a
-- question for PostgreSQL (through the server's reader thread). The response statuses are
-- counted and printed at the end as one line:
--   LOOKUP_STATUSES 404=123456,503=42

local alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
local threads = {}

function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() * 1000 + (id or 0) * 7919 + math.floor(os.clock() * 1e6))
end

local function ulid()
  local t = {}
  for i = 1, 26 do
    local k = math.random(1, 32)
    t[i] = alphabet:sub(k, k)
  end
  return table.concat(t)
end

local function unknown_id()
  return tostring(math.random(1000000, 2000000000))
end

function request()
  local r = math.random(1, 3)
  if r == 1 then
    local ref
    if math.random(1, 2) == 1 then ref = unknown_id() .. "-" .. ulid() else ref = ulid() end
    return wrk.format("GET", "/api/orders/" .. ref)
  elseif r == 2 then
    return wrk.format("GET", "/api/products/" .. unknown_id())
  end
  return wrk.format("POST", "/api/orders", { ["Content-Type"] = "application/json" },
    '{"product_id":' .. unknown_id() .. ',"qty":1}')
end

-- Statuses of all answers (wrk does not say which request an answer belongs to, so they are
-- not split by kind). A global table: done() reads it from each thread with thread:get.
statuses = {}

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for status, n in pairs(t:get("statuses") or {}) do
      total[status] = (total[status] or 0) + n
    end
  end
  local keys = {}
  for key in pairs(total) do keys[#keys + 1] = key end
  table.sort(keys)
  local out = {}
  for _, key in ipairs(keys) do out[#out + 1] = key .. "=" .. total[key] end
  io.write("LOOKUP_STATUSES " .. table.concat(out, ",") .. "\n")
end
