-- wrk script for scripts/bench.sh --auth: POST /api/orders reserving one unit of the product
-- BENCH_PRODUCT_ID, each request for the next buyer of a pool, round-robin.
--   BENCH_AUTH_FILE  one line per buyer: a user id (BENCH_AUTH_AS=user_id: sent as the body's
--                    "user_id") or a JWT (BENCH_AUTH_AS=bearer: sent as
--                    "Authorization: Bearer <token>", the body without user_id)
-- Every request is formatted once, in init, so the per-request cost in wrk is the same small
-- one for both kinds (a table lookup); wrk then sends the strings in turn. The requests of a
-- thread's connections share one cursor, so consecutive requests, on whichever connection,
-- name different buyers; each wrk thread starts at another offset of the pool.
local id = os.getenv("BENCH_PRODUCT_ID")
if id == nil or not id:match("^%d+$") then
  error("BENCH_PRODUCT_ID must be set to a product id")
end
local file = os.getenv("BENCH_AUTH_FILE")
local as = os.getenv("BENCH_AUTH_AS")
if file == nil or (as ~= "user_id" and as ~= "bearer") then
  error("BENCH_AUTH_FILE must name the pool and BENCH_AUTH_AS be user_id or bearer")
end

local threads = 0
function setup(thread)
  thread:set("thread_index", threads)
  threads = threads + 1
end

local requests = {}
local n = 0
local i = 0

function init(args)
  local headers = { ["Content-Type"] = "application/json" }
  for line in io.lines(file) do
    if line ~= "" then
      local body
      if as == "bearer" then
        headers["Authorization"] = "Bearer " .. line
        body = '{"product_id":' .. id .. ',"qty":1}'
      else
        body = '{"product_id":' .. id .. ',"qty":1,"user_id":"' .. line .. '"}'
      end
      n = n + 1
      requests[n] = wrk.format("POST", "/api/orders", headers, body)
    end
  end
  if n == 0 then
    error("BENCH_AUTH_FILE " .. file .. " has no lines")
  end
  -- A prime stride, so threads start far apart whatever their number.
  i = ((thread_index or 0) * 7919) % n
end

function request()
  i = i + 1
  if i > n then
    i = 1
  end
  return requests[i]
end
