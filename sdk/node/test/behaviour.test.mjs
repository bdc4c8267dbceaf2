// The package against a real keygate: run under sdk/testbed.py, which starts
// one and sets the KEYGATE_* environment (its docstring lists it).
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createHash, randomUUID } from "node:crypto";
import { Agent, request as undiciRequest } from "undici";
import { keygateFetch, keygateInterceptor, raiseForRefusal, KeygateError, sign, RFC9421 } from "keygate-client";

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run this suite under sdk/testbed.py`);
  return value;
}

const URL_ = env("KEYGATE_URL");
const key = (prefix = "") => ({ keyId: env(`KEYGATE_${prefix}KEY_ID`), secret: env(`KEYGATE_${prefix}SECRET`) });
const WRONG_SECRET = "sk_" + "A".repeat(43);
// A query with spaces, '+', an encoded '/', non-ASCII and a repeated key.
const AWKWARD = "/v1/whoami?q=a b+c&path=x%2Fy&city=Zoë 東京&k=1&k=2";

async function refusal(response) {
  const error = await KeygateError.fromResponse(response);
  assert.ok(error, `not a refusal: ${response.status}`);
  return error;
}

test("signs a GET, a JSON POST and a streamed body", async () => {
  const fetch = keygateFetch(key());
  const whoami = await (await raiseForRefusal(await fetch(`${URL_}/v1/whoami`))).json();
  assert.equal(whoami.key_id, key().keyId);
  const echo = await (await raiseForRefusal(await fetch(`${URL_}/v1/echo`, { method: "POST", body: JSON.stringify({ note: "café ✓" }) }))).json();
  assert.deepEqual(JSON.parse(echo.body), { note: "café ✓" });
  const stream = new ReadableStream({
    start(controller) {
      controller.enqueue(new TextEncoder().encode("strea"));
      controller.enqueue(new TextEncoder().encode("med bödy"));
      controller.close();
    },
  });
  const streamed = await (await raiseForRefusal(await fetch(`${URL_}/v1/echo`, { method: "POST", body: stream, duplex: "half" }))).json();
  assert.equal(streamed.body, "streamed bödy");
});

test("signs the query exactly as fetch sends it", async () => {
  const fetch = keygateFetch(key());
  await raiseForRefusal(await fetch(URL_ + AWKWARD));
  const seen = await (await raiseForRefusal(await fetch(`${URL_}/orders/7?q=a b+c&path=x%2Fy&k=1&k=2`))).json();
  assert.equal(seen.target, "/orders/7?q=a%20b+c&path=x%2Fy&k=1&k=2");
});

test("a streamed body over the limit is refused before sending", async () => {
  const fetch = keygateFetch({ ...key(), maxBodyBytes: 10 });
  await assert.rejects(fetch(`${URL_}/v1/echo`, { method: "POST", body: new Blob(["x".repeat(11)]).stream(), duplex: "half" }), RangeError);
});

test("a wrong secret shows both strings to sign", async () => {
  const fetch = keygateFetch({ keyId: key().keyId, secret: WRONG_SECRET });
  const response = await fetch(`${URL_}/v1/whoami?x=1`);
  const error = await refusal(response);
  assert.equal(error.code, "signature_mismatch");
  assert.equal(error.status, 401);
  assert.ok(error.requestId);
  assert.match(error.serverStringToSign, /\/v1\/whoami\?x=1/);
  assert.equal(error.stringToSign, error.serverStringToSign);
  assert.match(error.diff(), /the secret differs/);
  await assert.rejects(raiseForRefusal(response), (e) => e instanceof KeygateError && e.message.includes(key().keyId));
});

test("each refusal has its code", async () => {
  const cases = [
    [{ keyId: "pk_" + "Z".repeat(24), secret: key().secret }, "GET", "/v1/whoami", undefined, "unknown_key", 401],
    [key("REVOKED_"), "GET", "/v1/whoami", undefined, "key_revoked", 401],
    [key("NARROW_"), "POST", "/v1/echo", "{}", "forbidden", 403],
    // Over keygate's limit, within the SDK's (which applies to every body here).
    [{ ...key(), maxBodyBytes: 4 << 20 }, "POST", "/v1/echo", "x".repeat(64 * 1024 + 1), "body_too_large", 413],
  ];
  for (const [credentials, method, path, body, code, status] of cases) {
    const error = await refusal(await keygateFetch(credentials)(URL_ + path, { method, body }));
    assert.equal(error.code, code);
    assert.equal(error.status, status);
    assert.ok(error.detail);
  }
});

test("every malformed vector is refused with its code", async () => {
  const vectors = JSON.parse(readFileSync(env("KEYGATE_VECTORS"), "utf8"));
  for (const c of vectors.malformed) {
    const error = await refusal(await fetch(`${URL_}/v1/whoami`, { headers: { authorization: c.authorization } }));
    assert.equal(error.code, c.expected_error, c.name);
  }
});

test("a reused nonce is refused", async () => {
  const signed = sign({ ...key(), method: "GET", target: "/v1/whoami" });
  assert.equal((await fetch(`${URL_}/v1/whoami`, { headers: signed.headers })).status, 200);
  const error = await refusal(await fetch(`${URL_}/v1/whoami`, { headers: signed.headers }));
  assert.equal(error.code, "nonce_reused");
});

test("skew is corrected from server_time and kept", async () => {
  const fetch = keygateFetch(key());
  await raiseForRefusal(await fetch(`${env("KEYGATE_SHIFTED_URL")}/v1/whoami`));
  assert.ok(Math.abs(fetch.signer.clockOffsetMs - 600_000) < 5000, String(fetch.signer.clockOffsetMs));
  await raiseForRefusal(await fetch(`${env("KEYGATE_SHIFTED_URL")}/v1/echo`, { method: "POST", body: "again" }));
  const off = keygateFetch({ ...key(), correctClockSkew: false });
  const error = await refusal(await off(`${env("KEYGATE_SHIFTED_URL")}/v1/whoami`));
  assert.equal(error.code, "timestamp_out_of_range");
  assert.ok(Math.abs(error.serverTime - (Date.now() / 1000 + 600)) < 5);
});

test("keygate's own 503 is retried", async () => {
  let attempts = 0;
  const counting = (url, init) => {
    attempts += 1;
    return fetch(url, init);
  };
  const signed = keygateFetch({ ...key(), fetch: counting });
  await raiseForRefusal(await signed(`${env("KEYGATE_LOCKED_URL")}/v1/whoami`));
  assert.equal(attempts, 2);
});

test("an upstream 503 is retried with a fresh nonce; a POST only when asked", async () => {
  const fetch = keygateFetch(key());
  await raiseForRefusal(await fetch(`${URL_}/flaky/${randomUUID()}`));
  assert.equal((await refusal(await fetch(`${URL_}/flaky/${randomUUID()}`, { method: "POST", body: "1" }))).code, "unavailable");
  const eager = keygateFetch({ ...key(), retry: { retryNonIdempotent: true } });
  assert.equal((await eager(`${URL_}/flaky/${randomUUID()}`, { method: "POST", body: "1" })).status, 200);
});

test("a rate limit is waited out, or returned when retries are off", async () => {
  const fetch = keygateFetch(key("LIMITED_"));
  for (let i = 0; i < 2; i++) await raiseForRefusal(await fetch(`${URL_}/v1/whoami`));
  await new Promise((resolve) => setTimeout(resolve, 1200));
  const once = keygateFetch({ ...key("LIMITED_"), retry: { maxRetries: 0 } });
  const answers = [await once(`${URL_}/v1/whoami`), await once(`${URL_}/v1/whoami`)];
  assert.deepEqual(answers.map((a) => a.status), [200, 429]);
  const error = await refusal(answers[1]);
  assert.equal(error.code, "rate_limited");
  assert.ok(error.retryAfter >= 1);
});

test("a rotated key's old secret works during grace", async () => {
  for (const prefix of ["OLD_", "NEW_"]) {
    const whoami = await (await raiseForRefusal(await keygateFetch(key(prefix))(`${URL_}/v1/whoami`))).json();
    assert.equal(whoami.key_id, key(prefix).keyId);
  }
});

test("RFC 9421", async () => {
  const fetch = keygateFetch({ ...key(), scheme: RFC9421 });
  await raiseForRefusal(await fetch(URL_ + AWKWARD));
  const echo = await (await raiseForRefusal(await fetch(`${URL_}/v1/echo`, { method: "POST", body: "nine four two one" }))).json();
  assert.equal(echo.body, "nine four two one");
  const error = await refusal(await keygateFetch({ keyId: key().keyId, secret: WRONG_SECRET, scheme: RFC9421 })(`${URL_}/v1/whoami`));
  assert.equal(error.code, "signature_mismatch");
  assert.match(error.stringToSign, /"@method": GET/);
});

test("the undici interceptor signs what undici dispatches", async () => {
  const base = new Agent();
  const agent = base.compose(keygateInterceptor(key()));
  const body = JSON.stringify({ via: "undici" });
  const answer = await undiciRequest(`${URL_}/v1/echo?q=a%20b&k=1&k=2`, { method: "POST", body, dispatcher: agent });
  assert.equal(answer.statusCode, 200);
  assert.deepEqual(JSON.parse((await answer.body.json()).body), { via: "undici" });
  const upstream = await undiciRequest(`${URL_}/orders?x=%2F`, { method: "PUT", body: "bytes", dispatcher: agent });
  const seen = await upstream.body.json();
  assert.equal(seen.target, "/orders?x=%2F");
  assert.equal(seen.body_sha256, createHash("sha256").update("bytes").digest("hex"));
  await base.close();
});
