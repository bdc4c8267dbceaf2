"""The package against a real keygate: run under sdk/testbed.py, which
starts one and sets the KEYGATE_* environment (its docstring lists it)."""
import asyncio
import hashlib
import json
import os
import time
import unittest
import uuid

import httpx
import requests

import keygate_client
from keygate_client import NO_RETRIES, KeygateAuth, KeygateError, KeygateHttpxAuth, RetryPolicy, raise_for_refusal


def env(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run this suite under sdk/testbed.py")
    return value


URL = env("KEYGATE_URL")
KEY = (env("KEYGATE_KEY_ID"), env("KEYGATE_SECRET"))
WRONG_SECRET = "sk_" + "A" * 43
# A query with spaces, '+', an encoded '/', non-ASCII and a repeated key.
AWKWARD_PARAMS = [("q", "a b+c"), ("path", "x/y%2Fz"), ("city", "Zoë 東京"), ("k", "1"), ("k", "2")]
AWKWARD_RAW = "/v1/whoami?q=a%20b+c&path=a%2Fb&city=Zo%C3%AB&k=1&k=2"


def refusal(response):
    with_error = KeygateError.from_response(response)
    if with_error is None:
        raise AssertionError(f"not a refusal: {response.status_code} {response.text}")
    return with_error


class WithRequests(unittest.TestCase):
    def test_signs_a_get_and_a_json_post(self):
        auth = KeygateAuth(*KEY)
        whoami = raise_for_refusal(requests.get(f"{URL}/v1/whoami", auth=auth)).json()
        self.assertEqual(whoami["key_id"], KEY[0])
        echo = raise_for_refusal(requests.post(f"{URL}/v1/echo", json={"note": "café ✓"}, auth=auth)).json()
        self.assertEqual(json.loads(echo["body"]), {"note": "café ✓"})

    def test_signs_the_query_exactly_as_sent(self):
        auth = KeygateAuth(*KEY)
        raise_for_refusal(requests.get(f"{URL}/v1/whoami", params=AWKWARD_PARAMS, auth=auth))
        raise_for_refusal(requests.get(URL + AWKWARD_RAW, auth=auth))
        # Through the gateway: the upstream received what was signed.
        seen = raise_for_refusal(requests.get(f"{URL}/orders/7", params=AWKWARD_PARAMS, auth=auth)).json()
        self.assertTrue(seen["target"].startswith("/orders/7?q=a+b%2Bc&path=x%2Fy%252Fz"), seen)

    def test_signs_streamed_and_text_bodies_as_sent(self):
        auth = KeygateAuth(*KEY)
        chunks = (part.encode() for part in ["strea", "med ", "bödy"])
        echo = raise_for_refusal(requests.post(f"{URL}/v1/echo", data=chunks, auth=auth)).json()
        self.assertEqual(echo["body"], "streamed bödy")
        seen = raise_for_refusal(requests.put(f"{URL}/notes/1", data="tëxt", auth=auth)).json()
        self.assertEqual(seen["body_sha256"], hashlib.sha256("tëxt".encode()).hexdigest())

    def test_a_streamed_body_over_the_limit_is_refused_before_sending(self):
        auth = KeygateAuth(*KEY, max_body_bytes=10)
        with self.assertRaises(keygate_client.BodyTooLarge):
            requests.post(f"{URL}/v1/echo", data=iter([b"x" * 11]), auth=auth)

    def test_a_wrong_secret_shows_both_strings_to_sign(self):
        response = requests.get(f"{URL}/v1/whoami?x=1", auth=KeygateAuth(KEY[0], WRONG_SECRET))
        error = refusal(response)
        self.assertEqual((error.code, error.status), ("signature_mismatch", 401))
        self.assertTrue(error.request_id)
        self.assertIn("/v1/whoami?x=1", error.server_string_to_sign)
        self.assertEqual(error.string_to_sign, error.server_string_to_sign)
        self.assertIn("the secret differs", error.diff())
        with self.assertRaises(KeygateError) as raised:
            raise_for_refusal(response)
        self.assertIn(error.server_string_to_sign.split("\n")[1], str(raised.exception))

    def test_each_refusal_has_its_code(self):
        cases = [
            (KeygateAuth("pk_" + "Z" * 24, KEY[1]), "GET", "/v1/whoami", None, "unknown_key", 401),
            (KeygateAuth(env("KEYGATE_REVOKED_KEY_ID"), env("KEYGATE_REVOKED_SECRET")), "GET", "/v1/whoami", None, "key_revoked", 401),
            (KeygateAuth(env("KEYGATE_NARROW_KEY_ID"), env("KEYGATE_NARROW_SECRET")), "POST", "/v1/echo", b"{}", "forbidden", 403),
            (KeygateAuth(*KEY), "POST", "/v1/echo", b"x" * (64 * 1024 + 1), "body_too_large", 413),
        ]
        for auth, method, path, body, code, status in cases:
            with self.subTest(code):
                request = requests.Request(method, URL + path, data=body, auth=auth).prepare()
                error = refusal(requests.Session().send(request))
                self.assertEqual((error.code, error.status), (code, status))
                self.assertTrue(error.message)

    def test_every_malformed_vector_is_refused_with_its_code(self):
        with open(env("KEYGATE_VECTORS")) as file:
            vectors = json.load(file)
        for case in vectors["malformed"]:
            with self.subTest(case["name"]):
                error = refusal(requests.get(f"{URL}/v1/whoami", headers={"Authorization": case["authorization"]}))
                self.assertEqual(error.code, case["expected_error"])

    def test_a_reused_nonce_is_refused_and_not_retried(self):
        timestamp = int(time.time())
        signed = keygate_client.sign(*KEY, "GET", "/v1/whoami", b"", timestamp=timestamp)
        first = requests.get(f"{URL}/v1/whoami", headers=signed.headers)
        self.assertEqual(first.status_code, 200)
        error = refusal(requests.get(f"{URL}/v1/whoami", headers=signed.headers))
        self.assertEqual((error.code, error.status), ("nonce_reused", 401))

    def test_skew_is_corrected_from_server_time_and_kept(self):
        shifted = env("KEYGATE_SHIFTED_URL")
        auth = KeygateAuth(*KEY)
        first = raise_for_refusal(requests.get(f"{shifted}/v1/whoami", auth=auth))
        self.assertEqual([r.status_code for r in first.history], [401])
        self.assertAlmostEqual(auth.clock_offset, 600, delta=5)
        second = raise_for_refusal(requests.post(f"{shifted}/v1/echo", data=b"again", auth=auth))
        self.assertEqual(second.history, [])

    def test_skew_correction_can_be_turned_off(self):
        auth = KeygateAuth(*KEY, correct_clock_skew=False)
        error = refusal(requests.get(f"{env('KEYGATE_SHIFTED_URL')}/v1/whoami", auth=auth))
        self.assertEqual(error.code, "timestamp_out_of_range")
        self.assertAlmostEqual(error.server_time, time.time() + 600, delta=5)
        self.assertEqual(auth.clock_offset, 0)

    def test_keygates_own_503_is_retried_with_a_new_signature(self):
        response = raise_for_refusal(requests.get(f"{env('KEYGATE_LOCKED_URL')}/v1/whoami", auth=KeygateAuth(*KEY)))
        self.assertEqual([r.status_code for r in response.history], [503])
        first, last = response.history[0].request.headers["Authorization"], response.request.headers["Authorization"]
        self.assertNotEqual(first, last)

    def test_an_upstream_503_is_retried_with_a_fresh_nonce(self):
        # The first attempt's nonce was recorded: the same one again would be nonce_reused.
        response = raise_for_refusal(requests.get(f"{URL}/flaky/{uuid.uuid4()}", auth=KeygateAuth(*KEY)))
        self.assertEqual([r.status_code for r in response.history], [503])

    def test_a_post_is_not_retried_unless_asked(self):
        path = f"{URL}/flaky/{uuid.uuid4()}"
        self.assertEqual(refusal(requests.post(path, data=b"1", auth=KeygateAuth(*KEY))).code, "unavailable")
        path = f"{URL}/flaky/{uuid.uuid4()}"
        auth = KeygateAuth(*KEY, retry=RetryPolicy(retry_non_idempotent=True))
        self.assertEqual(requests.post(path, data=b"1", auth=auth).status_code, 200)

    def test_a_rate_limit_is_waited_out(self):
        auth = KeygateAuth(env("KEYGATE_LIMITED_KEY_ID"), env("KEYGATE_LIMITED_SECRET"))
        statuses = []
        for _ in range(2):
            response = raise_for_refusal(requests.get(f"{URL}/v1/whoami", auth=auth))
            statuses.append([r.status_code for r in response.history] + [response.status_code])
        self.assertIn([429, 200], statuses)
        time.sleep(1.2)  # a full allowance again
        no_retries = KeygateAuth(env("KEYGATE_LIMITED_KEY_ID"), env("KEYGATE_LIMITED_SECRET"), retry=NO_RETRIES)
        codes = [KeygateError.from_response(requests.get(f"{URL}/v1/whoami", auth=no_retries)) for _ in range(2)]
        limited = [error for error in codes if error is not None]
        self.assertEqual([e.code for e in limited], ["rate_limited"])
        self.assertGreaterEqual(limited[0].retry_after, 1)

    def test_a_long_retry_after_is_not_waited(self):
        auth = KeygateAuth(env("KEYGATE_LIMITED_KEY_ID"), env("KEYGATE_LIMITED_SECRET"),
                           retry=RetryPolicy(max_wait=0.5))
        answers = [requests.get(f"{URL}/v1/whoami", auth=auth).status_code for _ in range(2)]
        self.assertIn(429, answers)

    def test_a_rotated_keys_old_secret_works_during_grace(self):
        for prefix in ("OLD_", "NEW_"):
            auth = KeygateAuth(env(f"KEYGATE_{prefix}KEY_ID"), env(f"KEYGATE_{prefix}SECRET"))
            self.assertEqual(raise_for_refusal(requests.get(f"{URL}/v1/whoami", auth=auth)).json()["key_id"],
                             env(f"KEYGATE_{prefix}KEY_ID"))

    def test_rfc9421(self):
        auth = KeygateAuth(*KEY, scheme=keygate_client.RFC9421)
        raise_for_refusal(requests.get(f"{URL}/v1/whoami", params=AWKWARD_PARAMS, auth=auth))
        echo = raise_for_refusal(requests.post(f"{URL}/v1/echo", data=b"nine four two one", auth=auth)).json()
        self.assertEqual(echo["body"], "nine four two one")
        error = refusal(requests.get(f"{URL}/v1/whoami", auth=KeygateAuth(KEY[0], WRONG_SECRET, scheme="rfc9421")))
        self.assertEqual(error.code, "signature_mismatch")
        self.assertIn('"@method": GET', error.string_to_sign)


class WithHttpx(unittest.TestCase):
    def test_signs_gets_posts_and_awkward_queries(self):
        with httpx.Client(auth=KeygateHttpxAuth(*KEY)) as client:
            self.assertEqual(raise_for_refusal(client.get(f"{URL}/v1/whoami")).json()["key_id"], KEY[0])
            raise_for_refusal(client.get(f"{URL}/v1/whoami", params=AWKWARD_PARAMS))
            raise_for_refusal(client.get(URL + AWKWARD_RAW))
            echo = raise_for_refusal(client.post(f"{URL}/v1/echo", json={"n": "ö"})).json()
            self.assertEqual(json.loads(echo["body"]), {"n": "ö"})
            streamed = raise_for_refusal(client.post(f"{URL}/v1/echo", content=iter([b"a", b"b"]))).json()
            self.assertEqual(streamed["body"], "ab")

    def test_refusals_retries_and_skew(self):
        with httpx.Client(auth=KeygateHttpxAuth(KEY[0], WRONG_SECRET)) as client:
            error = refusal(client.get(f"{URL}/v1/whoami"))
            self.assertEqual(error.code, "signature_mismatch")
            self.assertEqual(error.string_to_sign, error.server_string_to_sign)
        with httpx.Client(auth=KeygateHttpxAuth(*KEY)) as client:
            response = raise_for_refusal(client.get(f"{URL}/flaky/{uuid.uuid4()}"))
            self.assertEqual([r.status_code for r in response.history], [503])
        auth = KeygateHttpxAuth(*KEY)
        with httpx.Client(auth=auth) as client:
            response = raise_for_refusal(client.get(f"{env('KEYGATE_SHIFTED_URL')}/v1/whoami"))
            self.assertEqual([r.status_code for r in response.history], [401])
            self.assertAlmostEqual(auth.clock_offset, 600, delta=5)

    def test_async(self):
        async def calls():
            # One signer per deployment: the clock offset is the server's.
            auth, shifted_auth = KeygateHttpxAuth(*KEY), KeygateHttpxAuth(*KEY)
            async with httpx.AsyncClient(auth=auth) as client:
                answers = await asyncio.gather(
                    client.get(f"{URL}/v1/whoami"),
                    client.post(f"{URL}/v1/echo", content=b"async"),
                    client.get(f"{URL}/flaky/{uuid.uuid4()}"),
                    client.get(f"{env('KEYGATE_SHIFTED_URL')}/v1/whoami", auth=shifted_auth),
                )
            return [raise_for_refusal(a) for a in answers], shifted_auth

        answers, auth = asyncio.run(calls())
        self.assertEqual(answers[1].json()["body"], "async")
        self.assertEqual([r.status_code for r in answers[2].history], [503])
        self.assertAlmostEqual(auth.clock_offset, 600, delta=5)


if __name__ == "__main__":
    unittest.main()
