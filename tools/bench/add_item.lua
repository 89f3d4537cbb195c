-- tools/bench/add_item.lua — wrk: add-item commands to random carts out of
-- CARTS (1000) opened beforehand as bench-1 .. bench-CARTS.
local carts = tonumber(os.getenv("CARTS") or "1000")
local body = '{"sku":"85123A","quantity":1,"unit_price":"2.55"}'
local headers = {["Content-Type"] = "application/json"}
local seeded = false

request = function()
  if not seeded then
    math.randomseed(os.time() + math.floor(os.clock() * 1e6))
    seeded = true
  end
  return wrk.format("POST", "/carts/bench-" .. math.random(1, carts) .. "/items", headers, body)
end

done = function(summary, latency, requests)
  io.write(string.format("result requests %d duration_us %d p50_us %d p99_us %d non2xx %d errors %d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
end
