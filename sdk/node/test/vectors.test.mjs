// tests/vectors/kg1.json: every good vector signs exactly; every bad one does not verify.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { sign, KeygateError } from "keygate-client";

const vectors = JSON.parse(readFileSync(process.env.KEYGATE_VECTORS, "utf8"));
const body = (c) => (c.body_base64 != null ? Buffer.from(c.body_base64, "base64") : c.body ?? "");

test("every valid vector signs exactly", () => {
  assert.ok(vectors.valid.length > 0);
  for (const c of vectors.valid) {
    const signed = sign({
      keyId: c.key_id, secret: c.secret, method: c.method, target: c.request_target,
      body: body(c), timestamp: Number(c.timestamp), nonce: c.nonce,
    });
    assert.equal(signed.stringToSign, c.expected.string_to_sign, c.name);
    assert.equal(signed.headers.authorization, c.expected.authorization, c.name);
  }
});

test("every mismatch vector signs differently", () => {
  assert.ok(vectors.signature_mismatch.length > 0);
  for (const c of vectors.signature_mismatch) {
    const r = c.request;
    const signed = sign({
      keyId: r.key_id, secret: r.secret, method: r.method, target: r.request_target,
      body: body(r), timestamp: Number(r.timestamp), nonce: r.nonce,
    });
    assert.notEqual(signed.headers.authorization, c.authorization, c.name);
  }
});

test("the diff marks the first differing line", () => {
  const error = new KeygateError({ code: "signature_mismatch", status: 401, message: "no", stringToSign: "a\nb\nc", serverStringToSign: "a\nB\nC" });
  const marked = error.diff().split("\n").filter((line) => line.startsWith(">"));
  assert.equal(marked.length, 1);
  assert.match(marked[0], /b.*\| B/);
});
