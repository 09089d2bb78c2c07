-- wrk script for scripts/bench: cycles through pre-signed USAePay requests.
--
-- Environment (read in every wrk thread):
--   BENCH_BODIES   prefix of the files from `bench_bodies`: thread i (from 0)
--                  reads `<prefix>.<i>`, one `<X-Signature>\t<body>` per line,
--                  and sends them in order, so no body is sent twice within a
--                  run unless a thread runs out of them (counted as `wraps`)
--   BENCH_PATH     request path, e.g. /webhooks/usaepay-main
--   BENCH_AUTH     Authorization header value (Basic ...), same for every request
--   BENCH_DELAY_MS optional think time before each request on a connection
--                  (paces a fixed number of connections to a lower rate)
--   BENCH_ONCE     1: send each body once and stop the thread when its file is
--                  used up, instead of wrapping around (for a fixed number of
--                  requests: set a long -d). Requests the thread's other
--                  connections ask for after that are a GET on the same path,
--                  which the gateway refuses with 405 and never publishes;
--                  they are counted as `extra`.
--
-- done() prints one machine-readable line:
--   BENCH requests=.. seconds=.. rps_all=.. rps_200=.. p50_ms=.. p75_ms=..
--         p90_ms=.. p99_ms=.. p999_ms=.. max_ms=.. dup=.. wraps=..
--         extra=.. socket_errors=.. status_<code>=..

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

function init(args)
   local file = assert(os.getenv("BENCH_BODIES"), "BENCH_BODIES not set") .. "." .. id
   path = os.getenv("BENCH_PATH") or "/webhooks/usaepay-main"
   headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = os.getenv("BENCH_AUTH"),
   }
   delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
   sigs, bodies = {}, {}
   for line in io.lines(file) do
      local tab = line:find("\t", 1, true)
      sigs[#sigs + 1] = line:sub(1, tab - 1)
      bodies[#bodies + 1] = line:sub(tab + 1)
   end
   assert(#bodies > 0, "no requests for thread " .. id)
   once = os.getenv("BENCH_ONCE") == "1"
   next_req, wraps, dup, extra = 0, 0, 0, 0
   statuses = {}
end

function request()
   next_req = next_req + 1
   if next_req > #bodies then
      if once then
         extra = extra + 1
         wrk.thread:stop()
         return wrk.format("GET", path, headers)
      end
      next_req, wraps = 1, wraps + 1
   end
   headers["X-Signature"] = sigs[next_req]
   return wrk.format("POST", path, headers, bodies[next_req])
end

if (tonumber(os.getenv("BENCH_DELAY_MS") or "0") or 0) > 0 then
   function delay()
      return delay_ms
   end
end

function response(status, _, body)
   statuses[status] = (statuses[status] or 0) + 1
   if status == 200 and body and body:find('"duplicate":true', 1, true) then
      dup = dup + 1
   end
end

function done(summary, latency, _)
   local totals, dups, wrapped, extras = {}, 0, 0, 0
   for _, t in ipairs(threads) do
      for code, count in pairs(t:get("statuses")) do
         totals[code] = (totals[code] or 0) + count
      end
      dups = dups + t:get("dup")
      wrapped = wrapped + t:get("wraps")
      extras = extras + t:get("extra")
   end
   local secs = summary.duration / 1e6
   local e = summary.errors
   local ms = function(p) return latency:percentile(p) / 1000 end
   local out = string.format(
      "BENCH requests=%d seconds=%.3f rps_all=%.1f rps_200=%.1f p50_ms=%.3f p75_ms=%.3f p90_ms=%.3f p99_ms=%.3f p999_ms=%.3f max_ms=%.3f dup=%d wraps=%d extra=%d socket_errors=%d",
      summary.requests, secs, summary.requests / secs, (totals[200] or 0) / secs,
      ms(50), ms(75), ms(90), ms(99), ms(99.9), latency.max / 1000,
      dups, wrapped, extras, e.connect + e.read + e.write + e.timeout)
   local codes = {}
   for code in pairs(totals) do codes[#codes + 1] = code end
   table.sort(codes)
   for _, code in ipairs(codes) do
      out = out .. string.format(" status_%d=%d", code, totals[code])
   end
   print(out)
end
