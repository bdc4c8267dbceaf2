-- wrk script: every request carries the next pre-signed Authorization
-- header from "$AUTH_FILE.<thread number>" (see presign.py), so each one
-- has a fresh nonce. The same script drives the unauthenticated phase
-- (TARGET=/healthz ignores the header), so both phases cost wrk the same.
-- START skips headers an earlier signed phase already used.
local headers = {}
local count, next_index = 0, tonumber(os.getenv("START") or "0")
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
