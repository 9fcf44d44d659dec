-- What bench/soap_wrk.lua and bench/portal_wrk.lua share, loaded by each with dofile: the
-- thread numbering, the counters and the summary. A script counts, per thread, the globals `sent` (requests
-- made), `confirmed` and `failures` (answers judged by its response()); done() adds them up
-- and prints one line starting with "OLVBENCH " holding JSON (latencies in microseconds),
-- which bench/wrk.py reads.

local threads = {}

-- Each wrk thread runs its own copy of the script, so these are per thread.
sent = 0
failures = 0
confirmed = 0

-- For the end of a script's init(): wrk calls request() once on the first thread to check
-- the request's format before any connection exists; that call sends nothing, so it must not
-- count as sent.
function skip_format_check()
  if thread_index == 0 then sent = -1 end
end

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function done(summary, latency, requests_stats)
  local total_sent, total_failures, total_confirmed = 0, 0, 0
  for _, thread in ipairs(threads) do
    total_sent = total_sent + thread:get("sent")
    total_failures = total_failures + thread:get("failures")
    total_confirmed = total_confirmed + thread:get("confirmed")
  end
  local errors = summary.errors
  io.write(string.format(
    'OLVBENCH {"sent": %d, "completed": %d, "duration_us": %d, "failures": %d, '
      .. '"confirmed": %d, "socket_errors": %d, "timeouts": %d, "non_2xx": %d, '
      .. '"p50": %d, "p95": %d, "p99": %d, "max": %d, "mean": %.1f}\n',
    total_sent, summary.requests, summary.duration, total_failures, total_confirmed,
    errors.connect + errors.read + errors.write, errors.timeout, errors.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max, latency.mean))
end
