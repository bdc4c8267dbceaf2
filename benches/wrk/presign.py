#!/usr/bin/env python3
"""Writes N KG1 Authorization headers for `GET <path>`, one per line, each
with a fresh random nonce and a timestamp a little ahead of now, so that
wrk can send signed requests without signing anything itself.

    presign.py KEY_ID SECRET N PATH OUT_FILE

An independent implementation of CONTRACT.md section 2 (standard library
only), like tests/vectors/generate_kg1.py: the load run also checks that
what a partner would write by hand is accepted.
"""
import hashlib
import hmac
import os
import sys
import time

key_id, secret, count, path, out_path = sys.argv[1:6]
empty_body = hashlib.sha256(b"").hexdigest()
# Valid for the whole run with the default 300 s skew.
timestamp = str(int(time.time()) + 30)
secret_bytes = secret.encode()
with open(out_path, "w") as out:
    for _ in range(int(count)):
        nonce = os.urandom(16).hex()
        string_to_sign = "\n".join(
            ["KG1-HMAC-SHA256", key_id, timestamp, nonce, "GET", path, empty_body]
        )
        signature = hmac.new(secret_bytes, string_to_sign.encode(), hashlib.sha256).hexdigest()
        out.write(
            f"KG1-HMAC-SHA256 KeyId={key_id}, Timestamp={timestamp}, Nonce={nonce}, Signature={signature}\n"
        )
