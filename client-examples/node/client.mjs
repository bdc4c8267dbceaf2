#!/usr/bin/env node
// Call a keygate-protected API with KG1-HMAC-SHA256 signatures.
//
// Node.js 18+, built-in crypto and fetch only (no npm packages). Copy
// `sign()` and `send()` into your backend; the rest of this file is a demo.
//
//   KEYGATE_URL=http://127.0.0.1:8080 KEYGATE_KEY_ID=pk_... KEYGATE_SECRET=sk_... node client.mjs

import { createHash, createHmac, randomBytes } from "node:crypto";
import { pathToFileURL } from "node:url";

const SCHEME = "KG1-HMAC-SHA256";

/**
 * Returns { authorization, stringToSign } for one request.
 * target: path and query exactly as on the request line ("/v1/orders?id=7&q=a%20b").
 * body:   a Buffer of the exact bytes you send (Buffer.alloc(0) for none).
 */
export function sign(keyId, secret, method, target, body,
                     timestamp = Math.floor(Date.now() / 1000).toString(),
                     nonce = randomBytes(16).toString("hex")) { // fresh for every request, retries too
  const stringToSign = [
    SCHEME,
    keyId,
    String(timestamp),
    nonce,
    method.toUpperCase(),
    target,
    createHash("sha256").update(body).digest("hex"),
  ].join("\n");
  const signature = createHmac("sha256", Buffer.from(secret, "utf8")).update(stringToSign, "utf8").digest("hex");
  return {
    authorization: `${SCHEME} KeyId=${keyId}, Timestamp=${timestamp}, Nonce=${nonce}, Signature=${signature}`,
    stringToSign,
  };
}

/** Signs and sends one request; resolves to { status, answer, stringToSign }. */
export async function send(keyId, secret, method, url, body = Buffer.alloc(0), headers = {}) {
  const parsed = new URL(url);
  // fetch sends the URL as parsed, so sign the parsed form.
  const target = parsed.pathname + parsed.search;
  const { authorization, stringToSign } = sign(keyId, secret, method, target, body);
  const response = await fetch(parsed, {
    method: method.toUpperCase(),
    headers: { ...headers, Authorization: authorization },
    body: body.length > 0 || ["POST", "PUT", "PATCH"].includes(method.toUpperCase()) ? body : undefined,
  });
  const text = await response.text();
  let answer;
  try { answer = JSON.parse(text); } catch { answer = text; }
  return { status: response.status, answer, stringToSign };
}

/** Prints the error code and, for a signature mismatch, both strings to sign side by side. */
export function explainRefusal(answer, ours) {
  const error = (answer && answer.error) || {};
  console.log(`  refused: ${error.code ?? "?"}: ${error.message ?? JSON.stringify(answer)}`);
  if (error.code === "signature_mismatch") {
    const a = ours.split("\n");
    const b = (error.string_to_sign ?? "").split("\n");
    console.log("  string to sign, ours | server's ('!' marks a difference):");
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      const [x, y] = [a[i] ?? "", b[i] ?? ""];
      console.log(`  ${x === y ? " " : "!"} ${x.padEnd(66)} | ${y}`);
    }
    if (ours === error.string_to_sign) console.log("  the strings match, so the secret is wrong: use the whole secret of this key id, sk_ prefix included");
  }
  if (error.code === "timestamp_out_of_range") {
    console.log(`  server_time=${error.server_time} our time=${Math.floor(Date.now() / 1000)}: fix the clock (NTP)`);
  }
}

// Test hook: tab-separated key_id, secret, method, target, timestamp, nonce,
// body_hex lines on stdin; one Authorization header per line on stdout.
async function signVectors() {
  let input = "";
  for await (const chunk of process.stdin) input += chunk;
  for (const line of input.split("\n").filter((l) => l.length > 0)) {
    const [keyId, secret, method, target, timestamp, nonce, bodyHex] = line.split("\t");
    console.log(sign(keyId, secret, method, target, Buffer.from(bodyHex, "hex"), timestamp, nonce).authorization);
  }
}

async function main() {
  const base = process.env.KEYGATE_URL.replace(/\/+$/, "");
  const keyId = process.env.KEYGATE_KEY_ID;
  const secret = process.env.KEYGATE_SECRET;
  const body = Buffer.from(JSON.stringify({ order_id: 7, note: "café – 東京 ✓" }), "utf8");
  const calls = [
    ["GET", "/v1/whoami?probe=1&x=a%20b", Buffer.alloc(0)],
    ["POST", "/v1/echo", body],
  ];
  let ok = true;
  for (const [method, target, payload] of calls) {
    const headers = payload.length ? { "Content-Type": "application/json" } : {};
    const { status, answer, stringToSign } = await send(keyId, secret, method, base + target, payload, headers);
    console.log(`${method} ${target} -> ${status}`);
    if (status >= 200 && status < 300) {
      console.log("  " + JSON.stringify(answer));
    } else {
      ok = false;
      explainRefusal(answer, stringToSign);
    }
  }
  return ok ? 0 : 1;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (process.argv[2] === "--sign-vectors") {
    await signVectors();
  } else {
    process.exitCode = await main().catch((e) => { console.error(e); return 2; });
  }
}
