#!/usr/bin/env python3
"""Drives a running keygate with an off-the-shelf RFC 9421 client: the
`http-message-signatures` package with `requests`, used as its README shows.

    KEYGATE_URL=http://127.0.0.1:8080 KEYGATE_KEY_ID=pk_... KEYGATE_SECRET=sk_... \
        python3 off_the_shelf.py [SIGN_ORIGIN]

SIGN_ORIGIN (e.g. https://api.example.com) signs URLs of that origin while
sending to KEYGATE_URL, as a client behind a TLS-terminating proxy would.
Each scenario prints one line "ok NAME" or "FAIL NAME: why"; exit 0 only if
all pass.
"""
import datetime
import os
import secrets
import sys

import requests
from http_message_signatures import HTTPMessageSigner, HTTPSignatureKeyResolver, algorithms

BASE = os.environ["KEYGATE_URL"].rstrip("/")
KEY_ID = os.environ["KEYGATE_KEY_ID"]
SECRET = os.environ["KEYGATE_SECRET"]
SIGN_ORIGIN = sys.argv[1].rstrip("/") if len(sys.argv) > 1 else BASE


class Keys(HTTPSignatureKeyResolver):
    def __init__(self, secret):
        self.secret = secret.encode("utf-8")  # the secret string's bytes, sk_ prefix included

    def resolve_private_key(self, key_id):
        return self.secret

    def resolve_public_key(self, key_id):
        return self.secret


def signer(secret=SECRET):
    return HTTPMessageSigner(signature_algorithm=algorithms.HMAC_SHA256, key_resolver=Keys(secret))


def prepare(method, target, content=None, **sign_options):
    """Signs a request for SIGN_ORIGIN + target, then points it at keygate.
    The content's digest is signed unless body=None is passed."""
    request = requests.Request(method, SIGN_ORIGIN + target, data=content).prepare()
    options = {"key_id": KEY_ID, "nonce": secrets.token_urlsafe(16),
               "covered_component_ids": ("@method", "@authority", "@target-uri")}
    secret = sign_options.pop("secret", SECRET)
    repoint = sign_options.pop("repoint", True)
    options.update(sign_options)
    if content is not None and "body" not in options:
        options["body"] = content
    signer(secret).sign(request, **options)
    if repoint:
        request.url = BASE + target
    return request


SESSION = requests.Session()


def send(request):
    response = SESSION.send(request, timeout=10)
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    return response.status_code, payload


results = []


def expect(name, request, status, code=None, check=None):
    got_status, payload = send(request)
    got_code = (payload.get("error") or {}).get("code")
    problem = None
    if got_status != status:
        problem = f"status {got_status}, wanted {status}: {payload}"
    elif code and got_code != code:
        problem = f"code {got_code}, wanted {code}: {payload}"
    elif check and not check(payload):
        problem = f"unexpected answer {payload}"
    results.append(problem is None)
    print(f"ok {name}" if problem is None else f"FAIL {name}: {problem}")
    return request


def main():
    # The usual options: method, authority, target URI, a nonce.
    whoami = expect("whoami", prepare("GET", "/v1/whoami?probe=1&x=a%20b"), 200,
                    check=lambda p: p.get("key_id") == KEY_ID)
    expect("replay", whoami, 401, "nonce_reused")

    body = '{"note": "café – 東京 ✓"}'.encode("utf-8")
    expect("echo-with-content-digest", prepare("POST", "/v1/echo", body), 200,
           check=lambda p: p.get("body") == body.decode("utf-8"))

    tampered = prepare("POST", "/v1/echo", body)
    tampered.body = b'{"note": "tampered"}'
    tampered.headers["Content-Length"] = str(len(tampered.body))
    expect("tampered-body", tampered, 401, "content_digest_mismatch")

    tampered_query = prepare("GET", "/v1/whoami?amount=1")
    tampered_query.url = BASE + "/v1/whoami?amount=1000"
    expect("tampered-query", tampered_query, 401, "signature_mismatch",
           check=lambda p: "@target-uri" in p["error"].get("string_to_sign", ""))

    expect("path-and-query", prepare("GET", "/v1/whoami?a=1", covered_component_ids=(
        "@method", "@path", "@query")), 200)
    expect("request-target-and-expires", prepare("GET", "/v1/whoami", covered_component_ids=(
        "@method", "@request-target"), expires=datetime.datetime.now() + datetime.timedelta(seconds=60)), 200)
    expect("missing-nonce", prepare("GET", "/v1/whoami", nonce=None), 401, "malformed_authorization")
    expect("weak-coverage", prepare("GET", "/v1/whoami", covered_component_ids=("@method", "@authority")),
           401, "malformed_authorization")
    expect("body-not-covered", prepare("POST", "/v1/echo", body, body=None,
                                       covered_component_ids=("@method", "@target-uri")),
           401, "malformed_authorization")
    expect("wrong-secret", prepare("GET", "/v1/whoami", secret=SECRET + "x"), 401, "signature_mismatch")
    expect("stale-created", prepare("GET", "/v1/whoami",
                                    created=datetime.datetime.now() - datetime.timedelta(hours=1)),
           401, "timestamp_out_of_range")
    expect("expired", prepare("GET", "/v1/whoami", expires=datetime.datetime.now() - datetime.timedelta(seconds=5)),
           401, "timestamp_out_of_range")

    # Two signatures: one for another verifier (unknown key), one for keygate.
    two = prepare("GET", "/v1/whoami", key_id="someone-elses-key", label="theirs", repoint=False)
    signer().sign(two, key_id=KEY_ID, nonce=secrets.token_urlsafe(16), label="ours",
                  covered_component_ids=("@method", "@authority", "@target-uri"),
                  append_if_signature_exists=True)
    two.url = BASE + "/v1/whoami"
    expect("two-signatures", two, 200)

    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
