-- submit.lua -- wrk script of bench/run.sh: POST {"kind":"echo","input":{"n":K}} to
-- /v1/tasks, each thread stopping after its share of WP_BENCH_N responses (wrk -d bounds
-- the time; wpbench.py sends SIGINT once the service holds N tasks, since wrk itself
-- only returns after -d). Prints one line "WPBENCH {json}": status counts, and the
-- CLOCK_MONOTONIC times of the first request and the last counted response (LuaJIT ffi),
-- comparable with Python's time.monotonic().
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } wpb_timespec;
int clock_gettime(int clk, wpb_timespec *ts);
]]
local ts = ffi.new("wpb_timespec")
local function now()
   ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
   return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end
local threads = {}
local total = tonumber(os.getenv("WP_BENCH_N") or "20000")
local nthreads = tonumber(os.getenv("WP_BENCH_THREADS") or "2")
local counter = 1

function setup(thread)
   thread:set("tid", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

function init(args)
   limit = math.floor(total / nthreads)
   if tid == 1 then limit = limit + total % nthreads end
   sent, got, ok, other, t_first, t_last = 0, 0, 0, 0, 0, 0
   headers = {["Content-Type"] = "application/json"}
end

function request()
   if sent == 0 then t_first = now() end
   sent = sent + 1
   local body = string.format('{"kind":"echo","input":{"n":%d}}', tid * 10000000 + sent)
   return wrk.format("POST", "/v1/tasks", headers, body)
end

function response(status, hdrs, body)
   if got >= limit then return end
   got = got + 1
   if status == 202 then ok = ok + 1 else other = other + 1 end
   if got >= limit then
      t_last = now()
      wrk.thread:stop()
   end
end

function done(summary, latency, requests)
   local s_ok, s_other, s_sent, first, last = 0, 0, 0, math.huge, 0
   for _, t in ipairs(threads) do
      s_ok = s_ok + t:get("ok")
      s_other = s_other + t:get("other")
      s_sent = s_sent + t:get("sent")
      if t:get("t_first") > 0 then first = math.min(first, t:get("t_first")) end
      last = math.max(last, t:get("t_last"))
   end
   io.write(string.format('WPBENCH {"wrk_202": %d, "wrk_non_202": %d, "wrk_sent": %d, ' ..
      '"wrk_t_first": %.6f, "wrk_t_last": %.6f, ' ..
      '"wrk_socket_errors": %d, "wrk_latency_p50_ms": %.3f, "wrk_latency_p99_ms": %.3f}\n',
      s_ok, s_other, s_sent, first, last,
      summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
      latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
