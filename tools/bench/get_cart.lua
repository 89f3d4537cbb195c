-- tools/bench/get_cart.lua — wrk: GET /carts/{id} of random carts out of
-- CARTS (1000) opened beforehand as bench-1 .. bench-CARTS ("/" for the bare
-- server, which answers every path alike).
local carts = tonumber(os.getenv("CARTS") or "1000")
local seeded = false

request = function()
  if not seeded then
    math.randomseed(os.time() + math.floor(os.clock() * 1e6))
    seeded = true
  end
  return wrk.format("GET", "/carts/bench-" .. math.random(1, carts))
end

done = function(summary, latency, requests)
  io.write(string.format("result requests %d duration_us %d p50_us %d p99_us %d non2xx %d errors %d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
end
