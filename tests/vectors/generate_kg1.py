#!/usr/bin/env python3
"""Writes kg1.json: the published KG1-HMAC-SHA256 test vectors.

Deliberately an independent implementation (Python standard library only),
so the Rust core and every client example are checked against something
that did not come from the code under test. Run it only when adding a case;
existing cases must never change.
"""
import base64
import hashlib
import hmac
import json
import pathlib

SCHEME = "KG1-HMAC-SHA256"
KEY_ID = "pk_4vQm2R7yXc9LpT3sWd8Zk1Bn"
SECRET = "sk_Zq3vX9mR2tY7uW1pL8sK4dF6gH0jB5nC2xV7bM9aQeE"


def string_to_sign(key_id, ts, nonce, method, target, body):
    return "\n".join([SCHEME, key_id, ts, nonce, method, target,
                      hashlib.sha256(body).hexdigest()])


def sign(secret, sts):
    return hmac.new(secret.encode(), sts.encode(), hashlib.sha256).hexdigest()


def header(key_id, ts, nonce, sig):
    return f"{SCHEME} KeyId={key_id}, Timestamp={ts}, Nonce={nonce}, Signature={sig}"


def request(name, method, target, body=b"", ts="1700000000",
            nonce="9f86d081884c7d659a2feaa0c55ad015", key_id=KEY_ID, secret=SECRET):
    out = {"name": name, "key_id": key_id, "secret": secret, "method": method,
           "request_target": target, "timestamp": ts, "nonce": nonce}
    try:
        out["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        out["body_base64"] = base64.b64encode(body).decode()
    return out


def valid(name, method, target, body=b"", **kw):
    case = request(name, method, target, body, **kw)
    sts = string_to_sign(case["key_id"], case["timestamp"], case["nonce"], method, target, body)
    sig = sign(case["secret"], sts)
    case["expected"] = {
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "string_to_sign": sts,
        "signature": sig,
        "authorization": header(case["key_id"], case["timestamp"], case["nonce"], sig),
    }
    return case


def mismatch(name, description, signed_as, sent_as):
    """A header signed over `signed_as` presented with the request `sent_as`."""
    sts = string_to_sign(signed_as["key_id"], signed_as["timestamp"], signed_as["nonce"],
                         signed_as["method"], signed_as["request_target"], signed_as["_body"])
    sig = sign(signed_as["secret"], sts)
    return {"name": name, "description": description,
            "request": {k: v for k, v in sent_as.items() if k not in ("_body", "name")},
            "authorization": header(sent_as["key_id"], sent_as["timestamp"], sent_as["nonce"], sig),
            "expected_error": "signature_mismatch"}


def raw(name, method, target, body=b"", **kw):
    case = request(name, method, target, body, **kw)
    case["_body"] = body
    return case


json_body = '{"order":{"id":7,"note":"café – 東京 ✓"}}'.encode()

valid_cases = [
    valid("get-no-query", "GET", "/v1/whoami"),
    valid("get-query-kept-as-sent", "GET", "/v1/whoami?probe=1&x=a%20b"),
    valid("post-json-utf8", "POST", "/v1/echo", json_body),
    valid("query-not-reordered-or-decoded", "GET", "/v1/orders?z=1&id=7&q=a%20b&id=3&empty=&plus=a+b"),
    valid("put-binary-body", "PUT", "/v1/blobs/1", bytes(range(256))),
    valid("delete-long-nonce-short-ts", "DELETE", "/v1/orders/7", ts="7",
          nonce="A-_" + "z" * 122 + "09"),
    valid("encoded-path", "GET", "/v1/files/a%2Fb/%E6%9D%B1"),
]

base = raw("base", "POST", "/v1/echo?probe=1&x=a%20b", json_body)


def altered(**changes):
    case = dict(base)
    case.update(changes)
    if "_body" in changes:
        try:
            case["body"] = changes["_body"].decode()
        except UnicodeDecodeError:
            pass
    return case


mismatch_cases = [
    mismatch("query-reordered", "the client signed its query re-ordered",
             altered(request_target="/v1/echo?x=a%20b&probe=1"), base),
    mismatch("query-decoded", "the client signed the decoded query",
             altered(request_target="/v1/echo?probe=1&x=a b"), base),
    mismatch("body-reserialised", "the client signed one serialisation of the JSON and sent another",
             base, altered(_body=json.dumps(json.loads(json_body), ensure_ascii=False).encode())),
    mismatch("method-lowercase", "the client signed the method in lowercase",
             altered(method="post"), base),
    mismatch("secret-without-prefix", "the client used the secret without its sk_ prefix",
             altered(secret=SECRET[3:]), base),
    mismatch("host-in-target", "the client signed the full URL instead of path and query",
             altered(request_target="https://api.example.com/v1/echo?probe=1&x=a%20b"), base),
    mismatch("timestamp-changed", "the Timestamp in the header is not the one signed",
             base, altered(timestamp="1700000001")),
]

sig = "0" * 64
ok_params = f"KeyId={KEY_ID}, Timestamp=1700000000, Nonce=9f86d081884c7d659a2feaa0c55ad015, Signature={sig}"
malformed = [
    ("wrong-scheme", "Bearer abc"),
    ("no-parameters", SCHEME),
    ("missing-signature", f"{SCHEME} KeyId={KEY_ID}, Timestamp=1700000000, Nonce=9f86d081884c7d659a2feaa0c55ad015"),
    ("repeated-nonce", f"{SCHEME} {ok_params}, Nonce=9f86d081884c7d659a2feaa0c55ad015"),
    ("unknown-parameter", f"{SCHEME} {ok_params}, Region=eu"),
    ("quoted-value", f'{SCHEME} {ok_params.replace(KEY_ID, chr(34) + KEY_ID + chr(34))}'),
    ("uppercase-hex", f"{SCHEME} {ok_params.replace(sig, 'A' * 64)}"),
    ("short-signature", f"{SCHEME} {ok_params.replace(sig, '0' * 63)}"),
    ("nonce-too-short", f"{SCHEME} {ok_params.replace('9f86d081884c7d659a2feaa0c55ad015', 'abc')}"),
    ("nonce-bad-char", f"{SCHEME} {ok_params.replace('9f86d081884c7d659a2feaa0c55ad015', '9f86d081884c7d65+a2feaa0')}"),
    ("timestamp-13-digits", f"{SCHEME} {ok_params.replace('1700000000', '1700000000000')}"),
    ("timestamp-not-decimal", f"{SCHEME} {ok_params.replace('1700000000', '0x6553f100')}"),
    ("empty-parameter", f"{SCHEME} {ok_params},"),
]

vectors = {
    "scheme": SCHEME,
    "description": "KG1-HMAC-SHA256 test vectors. valid: sign the request, expect every field of "
                   "'expected'. signature_mismatch: the Authorization header was signed over a "
                   "different request than the one described, so verification must fail. "
                   "malformed: the header must be refused before any key lookup. A body is given "
                   "as UTF-8 text in 'body' or as bytes in 'body_base64'.",
    "valid": valid_cases,
    "signature_mismatch": mismatch_cases,
    "malformed": [{"name": n, "authorization": h, "expected_error": "malformed_authorization"}
                  for n, h in malformed],
}

out = pathlib.Path(__file__).with_name("kg1.json")
out.write_text(json.dumps(vectors, indent=2, ensure_ascii=False) + "\n")
print(f"wrote {out}")
