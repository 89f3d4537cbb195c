-- tools/bench/carts.lua — wrk, on random carts out of CARTS (1000) opened
-- beforehand as bench-1 .. bench-CARTS:
--   MODE=add_item (default)  POST /carts/{id}/items, one add-item command
--   MODE=get                 GET /carts/{id} (the bare server answers every path alike)
-- done() prints one line for tools/bench/bench.sh.
local carts = tonumber(os.getenv("CARTS") or "1000")
local mode = os.getenv("MODE") or "add_item"
local body = '{"sku":"85123A","quantity":1,"unit_price":"2.55"}'
local headers = {["Content-Type"] = "application/json"}
local seeded = false

request = function()
  if not seeded then
    math.randomseed(os.time() + math.floor(os.clock() * 1e6))
    seeded = true
  end
  local id = math.random(1, carts)
  if mode == "get" then
    return wrk.format("GET", "/carts/bench-" .. id)
  end
  return wrk.format("POST", "/carts/bench-" .. id .. "/items", headers, body)
end

done = function(summary, latency, requests)
  io.write(string.format("result requests %d duration_us %d p50_us %d p99_us %d non2xx %d errors %d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
end
