"""tests/vectors/kg1.json: every good vector signs exactly; every bad one does not verify."""
import json
import os
import unittest
from pathlib import Path

import keygate_client

VECTORS = json.loads(Path(os.environ.get(
    "KEYGATE_VECTORS", Path(__file__).resolve().parents[3] / "tests/vectors/kg1.json")).read_text())


def body(case):
    if "body_base64" in case:
        import base64
        return base64.b64decode(case["body_base64"])
    return case.get("body", "").encode("utf-8")


class Vectors(unittest.TestCase):
    def test_every_valid_vector_signs_exactly(self):
        self.assertGreater(len(VECTORS["valid"]), 0)
        for case in VECTORS["valid"]:
            with self.subTest(case["name"]):
                signed = keygate_client.sign(
                    case["key_id"], case["secret"], case["method"], case["request_target"], body(case),
                    timestamp=int(case["timestamp"]), nonce=case["nonce"])
                self.assertEqual(signed.string_to_sign, case["expected"]["string_to_sign"])
                self.assertEqual(signed.headers["Authorization"], case["expected"]["authorization"])

    def test_every_mismatch_vector_signs_differently(self):
        self.assertGreater(len(VECTORS["signature_mismatch"]), 0)
        for case in VECTORS["signature_mismatch"]:
            request = case["request"]
            with self.subTest(case["name"]):
                signed = keygate_client.sign(
                    request["key_id"], request["secret"], request["method"], request["request_target"],
                    body(request), timestamp=int(request["timestamp"]), nonce=request["nonce"])
                self.assertNotEqual(signed.headers["Authorization"], case["authorization"])

    def test_the_diff_marks_the_first_differing_line(self):
        diff = keygate_client.KeygateError(
            "signature_mismatch", 401, "no", string_to_sign="a\nb\nc", server_string_to_sign="a\nB\nC").diff()
        marked = [line for line in diff.split("\n") if line.startswith(">")]
        self.assertEqual(len(marked), 1)
        self.assertIn("b", marked[0])
        self.assertIn("B", marked[0])


if __name__ == "__main__":
    unittest.main()
