-- wrk script for croupier: sends every request with a `croupier-topic` header, so croupier
-- routes it to a provider of that topic, and prints a summary of failures at the end.
--
--   CROUPIER_TOPIC=demo wrk -t2 -c64 -d10s -s tools/croupier.lua http://127.0.0.1:8000/
--
-- Environment:
--   CROUPIER_TOPIC         topic to ask for (default "demo").
--   CROUPIER_COUNT_STATUS  set to 1 to count every status code and list the non-2xx ones.
--                          Off by default: defining wrk's `response` hook makes wrk parse each
--                          answer's headers and body into Lua, which slows the load generator
--                          and so skews a benchmark. Without it, the summary shows only what
--                          wrk counts itself (statuses of 400 and above, socket errors).

local topic = os.getenv("CROUPIER_TOPIC")
if topic == nil or topic == "" then
   topic = "demo"
end
local count_status = os.getenv("CROUPIER_COUNT_STATUS") == "1"

-- wrk builds its one static request from wrk.headers after this file runs in each thread.
wrk.headers["croupier-topic"] = topic

-- Each wrk thread runs this file in its own Lua state; `setup` runs in the main state once per
-- thread, and keeping the threads here lets `done` read their counters afterwards.
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

if count_status then
   -- Per thread: status code -> number of answers with it.
   statuses = {}

   function response(status, headers, body)
      statuses[status] = (statuses[status] or 0) + 1
   end
end

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format("croupier.lua: topic %s, %d answers\n", topic, summary.requests))
   io.write(string.format(
      "  status >= 400: %d; socket errors: connect %d, read %d, write %d, timeout %d\n",
      errors.status, errors.connect, errors.read, errors.write, errors.timeout))

   if not count_status then
      io.write("  (set CROUPIER_COUNT_STATUS=1 to count every non-2xx status)\n")
      return
   end

   -- Add up the threads' counters, then list the statuses outside 2xx in order.
   local total = {}
   for _, thread in ipairs(threads) do
      for status, count in pairs(thread:get("statuses") or {}) do
         total[status] = (total[status] or 0) + count
      end
   end
   local failed, codes = 0, {}
   for status, count in pairs(total) do
      if status < 200 or status > 299 then
         failed = failed + count
         table.insert(codes, status)
      end
   end
   table.sort(codes)
   io.write(string.format("  non-2xx answers: %d\n", failed))
   for _, status in ipairs(codes) do
      io.write(string.format("    %d: %d\n", status, total[status]))
   end
end
