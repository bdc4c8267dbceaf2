-- wrk script: every request carries the next pre-signed Authorization
-- header from "$AUTH_FILE.<thread number>" (see presign.py), so each one
-- has a fresh nonce. The same script drives the unauthenticated phase
-- (TARGET=/healthz ignores the header), so both phases cost wrk the same.
-- START skips headers an earlier signed phase already used; with NEXT_FILE
-- set, the run writes there where the next phase should start.
local headers = {}
-- next_index is a global so that done() can read it from each thread.
local count = 0
next_index = tonumber(os.getenv("START") or "0")
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function init(args)
  local file = assert(io.open(os.getenv("AUTH_FILE") .. "." .. thread_number, "r"))
  for line in file:lines() do
    count = count + 1
    headers[count] = line
  end
  file:close()
end

function request()
  next_index = next_index + 1
  if next_index > count then
    -- Out of fresh nonces: these are replays now, and keygate refuses
    -- them (wrk reports them as non-2xx); presign more.
    next_index = 1
  end
  return wrk.format("GET", os.getenv("TARGET"), { ["Authorization"] = headers[next_index] })
end

function done(summary, latency, requests)
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
