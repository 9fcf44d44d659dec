-- wrk script for bench/portal_bench.py: POST /api/v1/verify for random bench vehicles,
-- rotating over the clients' API tokens, and checking every answer (HTTP 200, verdict
-- "confirmed").
--
--   wrk -c 32 -t 1 -d 20s --latency -s bench/portal_wrk.lua http://127.0.0.1:PORT -- TOKENS N
--
-- TOKENS is a file with one API token per line; N the number of bench vehicles (their VINs
-- are bench/portal_bench.py's vin(i), i < N). The summary is the "OLVBENCH " line of
-- wrk_common.lua's done().

local tokens = {}
local vehicles = 0
local turn = 0

-- setup(), the counters and done() (the summary line) live in wrk_common.lua, beside this
-- script.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wrk_common.lua")

function init(args)
  local listing = args[1]
  assert(listing, "the tokens file is the script's first argument")
  for line in io.lines(listing) do
    if #line > 0 then table.insert(tokens, line) end
  end
  assert(#tokens > 0, "no tokens")
  vehicles = assert(tonumber(args[2]), "the number of vehicles is the second argument")
  math.randomseed(os.time() + thread_index)
  skip_format_check()
end

function request()
  turn = turn % #tokens + 1
  sent = sent + 1
  local body = string.format('{"vin": "BENCH%012d"}', math.random(0, vehicles - 1))
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. tokens[turn],
  }
  return wrk.format("POST", "/api/v1/verify", headers, body)
end

function response(status, headers, body)
  if status == 200 and body:find('"verdict":"confirmed"', 1, true) then
    confirmed = confirmed + 1
  else
    failures = failures + 1
  end
end
