#!/usr/bin/env python3
"""Writes N KG1 Authorization headers for `GET <path>`, one per line, each
with a fresh random nonce and a timestamp a little ahead of now, so that
wrk can send signed requests without signing anything itself.

    presign.py KEY_ID SECRET N PATH OUT_FILE

It signs with `sign()` from client-examples/python/client.py, the code
partners copy, so the load run also shows that code being accepted. Every
line of a file has the same length (one key id, one ten-digit timestamp,
fixed-size hex nonce and signature): replay.lua seeks to a header by it.
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "client-examples", "python"))
from client import sign  # noqa: E402

key_id, secret, count, path, out_path = sys.argv[1:6]
# Valid for the whole run with the default 300 s skew.
timestamp = int(time.time()) + 30
with open(out_path, "w") as out:
    for _ in range(int(count)):
        header, _ = sign(key_id, secret, "GET", path, b"", timestamp=timestamp)
        out.write(header + "\n")
    # On disk before the run starts: otherwise the kernel writes these
    # hundreds of megabytes back about 30 s later, in the middle of a
    # phase, and every process on the machine stalls for a few hundred
    # milliseconds while it does (BENCHMARKS.md, round 14).
    out.flush()
    os.fsync(out.fileno())
