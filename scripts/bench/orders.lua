-- wrk script for scripts/bench.sh: POST /api/orders reserving one unit of
-- the product whose id is in the environment variable BENCH_PRODUCT_ID.
local id = os.getenv("BENCH_PRODUCT_ID")
if id == nil or not id:match("^%d+$") then
  error("BENCH_PRODUCT_ID must be set to a product id")
end
wrk.method = "POST"
wrk.path = "/api/orders"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"product_id":' .. id .. ',"qty":1}'
