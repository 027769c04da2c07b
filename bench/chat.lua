-- wrk script for `make bench`: POSTs one chat completion per request and
-- counts as an error every answer that is not status 200 with the mark of a
-- complete answer in its body ("[DONE]" for a stream, "usage" for JSON), so
-- that errors cannot pass as speed. Settings come from the environment:
--   BENCH_PATH  the request path          BENCH_BODY  the JSON body
--   BENCH_AUTH  the Authorization value   BENCH_MARK  the text a good body holds
-- done() prints one line "BENCH_RESULT {json}" that bench/wrk.py reads.

local path = os.getenv("BENCH_PATH")
local body = os.getenv("BENCH_BODY")
local auth = os.getenv("BENCH_AUTH") or ""
local mark = os.getenv("BENCH_MARK")

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   bad = 0
   good = 0
   local headers = {["Content-Type"] = "application/json"}
   if auth ~= "" then
      headers["Authorization"] = auth
   end
   -- Built once: every request is the same bytes.
   req = wrk.format("POST", path, headers, body)
end

function request()
   return req
end

function response(status, headers, response_body)
   if status == 200 and string.find(response_body, mark, 1, true) then
      good = good + 1
   else
      bad = bad + 1
   end
end

function done(summary, latency, requests)
   local bad_total, good_total = 0, 0
   for _, thread in ipairs(threads) do
      bad_total = bad_total + thread:get("bad")
      good_total = good_total + thread:get("good")
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_RESULT {"requests":%d,"duration_us":%d,"good":%d,"bad":%d,' ..
      '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
      '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
      summary.requests, summary.duration, good_total, bad_total,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
