#!/usr/bin/env python3
"""Call a keygate-protected API with KG1-HMAC-SHA256 signatures.

Standard library only (Python 3.8+). Copy `sign()` (and `send()` if you use
urllib) into your backend; the rest of this file is a demo.

    KEYGATE_URL=http://127.0.0.1:8080 KEYGATE_KEY_ID=pk_... KEYGATE_SECRET=sk_... python3 client.py
"""
import hashlib
import hmac
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

SCHEME = "KG1-HMAC-SHA256"


def sign(key_id, secret, method, target, body, timestamp=None, nonce=None):
    """Returns (authorization_header, string_to_sign) for one request.

    target: path and query exactly as they go on the request line
            (e.g. "/v1/orders?id=7&q=a%20b"): not decoded, not re-ordered.
    body:   the exact bytes you send (b"" for none). Serialise JSON once,
            sign those bytes and send those bytes.
    """
    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_hex(16)  # fresh for every request, retries too
    string_to_sign = "\n".join([
        SCHEME,
        key_id,
        timestamp,
        nonce,
        method.upper(),
        target,
        hashlib.sha256(body).hexdigest(),
    ])
    signature = hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    header = f"{SCHEME} KeyId={key_id}, Timestamp={timestamp}, Nonce={nonce}, Signature={signature}"
    return header, string_to_sign


def send(key_id, secret, method, url, body=b"", headers=None):
    """Signs and sends one request. Returns (status, parsed JSON or text, string_to_sign)."""
    parts = urlsplit(url)
    target = parts.path + ("?" + parts.query if parts.query else "")
    authorization, string_to_sign = sign(key_id, secret, method, target, body)
    request = urllib.request.Request(
        url,
        data=body if body or method.upper() in ("POST", "PUT", "PATCH") else None,
        method=method.upper(),
        headers={"Authorization": authorization, **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = raw.decode("utf-8", "replace")
    return status, answer, string_to_sign


def explain_refusal(answer, ours):
    """Prints the error code and, for a signature mismatch, both strings to sign side by side."""
    error = answer.get("error", {}) if isinstance(answer, dict) else {}
    print(f"  refused: {error.get('code', '?')}: {error.get('message', answer)}")
    if error.get("code") == "signature_mismatch":
        theirs = error.get("string_to_sign", "")
        print("  string to sign, ours | server's ('!' marks a difference):")
        ours_lines, their_lines = ours.split("\n"), theirs.split("\n")
        for i in range(max(len(ours_lines), len(their_lines))):
            a = ours_lines[i] if i < len(ours_lines) else ""
            b = their_lines[i] if i < len(their_lines) else ""
            print(f"  {'!' if a != b else ' '} {a:<66} | {b}")
        if ours == theirs:
            print("  the strings match, so the secret is wrong: use the whole secret of this key id, sk_ prefix included")
    if error.get("code") == "timestamp_out_of_range":
        print(f"  server_time={error.get('server_time')} our time={int(time.time())}: fix the clock (NTP)")


def sign_vectors():
    """Test hook: reads tab-separated key_id, secret, method, target,
    timestamp, nonce, body_hex lines and prints one Authorization header per line."""
    for line in sys.stdin.read().splitlines():
        key_id, secret, method, target, timestamp, nonce, body_hex = line.split("\t")
        print(sign(key_id, secret, method, target, bytes.fromhex(body_hex), timestamp, nonce)[0])


def main():
    base = os.environ["KEYGATE_URL"].rstrip("/")
    key_id, secret = os.environ["KEYGATE_KEY_ID"], os.environ["KEYGATE_SECRET"]
    body = json.dumps({"order_id": 7, "note": "café – 東京 ✓"}, ensure_ascii=False).encode("utf-8")
    calls = [
        ("GET", "/v1/whoami?probe=1&x=a%20b", b""),
        ("POST", "/v1/echo", body),
    ]
    ok = True
    for method, target, payload in calls:
        status, answer, string_to_sign = send(
            key_id, secret, method, base + target, payload,
            headers={"Content-Type": "application/json"} if payload else None,
        )
        print(f"{method} {target} -> {status}")
        if 200 <= status < 300:
            print("  " + json.dumps(answer, ensure_ascii=False))
        else:
            ok = False
            explain_refusal(answer, string_to_sign)
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1:] == ["--sign-vectors"]:
        sign_vectors()
        sys.exit(0)
    sys.exit(main())
