-- wrk script: every request is a new, valid event (no duplicate hits).
-- Arguments after "--": run prefix, bearer token, batch size (1 = single events).
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  prefix = args[1] .. "-" .. tid
  batch = tonumber(args[3])
  counter = 0
  wrk.headers["Authorization"] = "Bearer " .. args[2]
  wrk.headers["Content-Type"] = "application/json"
end

local function event()
  counter = counter + 1
  return string.format(
    '{"partner_id":"casino_alpha","player_login":"player%d","session_id":"sess_%s_%d",' ..
    '"event_type":"bet","amount":%d.%02d,"currency":"EUR","event_id":"%s-%d",' ..
    '"occurred_at":"2026-11-24T05:00:00.000Z"}',
    counter % 1000, prefix, counter % 97, counter % 500, counter % 100, prefix, counter)
end

function request()
  local body
  if batch == 1 then
    body = event()
  else
    local items = {}
    for i = 1, batch do items[i] = event() end
    body = "[" .. table.concat(items, ",") .. "]"
  end
  return wrk.format("POST", "/player-events", nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d bad_status=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
