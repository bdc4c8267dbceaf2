-- wrk script: every request carries the next pre-signed Authorization
-- header from "$AUTH_FILE.<thread number>" (see presign.py), so each one
-- has a fresh nonce. The same script drives the unauthenticated phase
-- (TARGET=/healthz ignores the header), so both phases cost wrk the same.
-- START skips headers an earlier signed phase already used; with NEXT_FILE
-- set, the run writes there where the next phase should start.
-- The headers are read one at a time as requests need them, not loaded in
-- init: wrk starts each thread as soon as that thread's init returns, and
-- counts its requests from then on, so while a later thread loaded a
-- large file (a second for two million headers) the earlier ones already
-- ran alone, and the phase counted their head start (BENCHMARKS.md,
-- round 14). Every line of a file has one length (presign.py writes them
-- so), which lets init seek straight to START.
local file, line_length, count
-- next_index is a global so that done() can read it from each thread.
next_index = tonumber(os.getenv("START") or "0")
local threads = {}

-- With TARGETS ("host:port host:port ..."), thread N sends to the Nth
-- target (wrapping around): one wrk process can drive several servers,
-- each thread with its own headers.
local targets = {}
for target in (os.getenv("TARGETS") or ""):gmatch("%S+") do
  table.insert(targets, target)
end

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
  if #targets > 0 then
    local target = targets[(#threads - 1) % #targets + 1]
    local host, port = target:match("^(.+):(%d+)$")
    thread.addr = wrk.lookup(host, port)[1]
  end
end

function init(args)
  local name = os.getenv("AUTH_FILE") .. "." .. thread_number
  file = assert(io.open(name, "r"))
  line_length = #assert(file:read("*l"), name .. " is empty") + 1
  local size = file:seek("end")
  assert(size % line_length == 0, name .. ": headers of different lengths")
  count = size / line_length
  -- Past the end (out of fresh headers), request() starts over.
  file:seek("set", math.min(next_index, count) * line_length)
end

function request()
  next_index = next_index + 1
  if next_index > count then
    -- Out of fresh nonces: these are replays now, and keygate refuses
    -- them (wrk reports them as non-2xx); presign more.
    next_index = 1
    file:seek("set", 0)
  end
  return wrk.format("GET", os.getenv("TARGET"), { ["Authorization"] = file:read("*l") })
end

function done(summary, latency, requests)
  -- wrk's --latency table stops at p99; the tail beyond it (microseconds).
  io.write(string.format("p99.9 %d\n", latency:percentile(99.9)))
  local next_file = os.getenv("NEXT_FILE")
  if next_file == nil then return end
  local furthest = 0
  for _, thread in ipairs(threads) do
    furthest = math.max(furthest, thread:get("next_index"))
  end
  local file = assert(io.open(next_file, "w"))
  file:write(furthest, "\n")
  file:close()
end
