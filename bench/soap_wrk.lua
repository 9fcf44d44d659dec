-- wrk script for bench/soap_bench.py: rotates over pre-generated SOAP requests and checks
-- every answer (HTTP 200 carrying a ResponseCode element).
--
--   wrk -c 32 -t 1 -d 12s --latency -s bench/soap_wrk.lua http://127.0.0.1:PORT -- CORPUS ACTION
--
-- CORPUS is written by bench/soap_corpus.py: per request a header line "PATH LENGTH", then
-- LENGTH bytes of body, then a newline. ACTION is the SOAPAction URI (olv/iicmva.py's
-- SOAP_ACTION, passed by bench/loadgen.py so that it is defined in one place). The summary
-- is the "OLVBENCH " line of wrk_common.lua's done().

local requests = {}
local count = 0
local position = 0

-- setup(), the counters and done() (the summary line) live in wrk_common.lua, beside this
-- script.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wrk_common.lua")

function init(args)
  local file = assert(io.open(args[1], "rb"), "cannot open the request corpus")
  local action = assert(args[2], "the SOAPAction URI is the script's second argument")
  local headers = {
    ["Content-Type"] = "text/xml; charset=utf-8",
    ["SOAPAction"] = '"' .. action .. '"',
  }
  while true do
    local line = file:read("*l")
    if not line then break end
    local path, length = line:match("^(%S+) (%d+)$")
    local body = file:read(tonumber(length))
    file:read("*l")
    count = count + 1
    requests[count] = wrk.format("POST", path, headers, body)
  end
  file:close()
  -- Threads start at different places so they do not send the same sequence.
  position = (thread_index * 7919) % count
  skip_format_check()
end

function request()
  position = position % count + 1
  sent = sent + 1
  return requests[position]
end

function response(status, headers, body)
  if status ~= 200 or not body:find("ResponseCode>", 1, true) then
    failures = failures + 1
  elseif body:find(">Confirmed<", 1, true) then
    confirmed = confirmed + 1
  end
end
