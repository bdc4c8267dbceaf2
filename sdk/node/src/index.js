// keygate-client: sign requests to keygate-protected APIs. No dependencies.
import { createHash, createHmac, randomBytes } from "node:crypto";

export const KG1 = "KG1-HMAC-SHA256";
export const RFC9421 = "rfc9421";
export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
// RFC 9110 section 9.2.2: repeating these has the effect of sending once.
export const IDEMPOTENT_METHODS = new Set(["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]);

const encoder = new TextEncoder();

function bytesOf(body) {
  if (body == null) return new Uint8Array(0);
  if (typeof body === "string") return encoder.encode(body);
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  throw new TypeError("body must be a string, a Uint8Array/Buffer or an ArrayBuffer: buffer a stream before signing");
}

/** KG1's seven lines (CONTRACT section 2). */
export function stringToSign({ keyId, timestamp, nonce, method, target, body }) {
  return [
    KG1,
    keyId,
    String(timestamp),
    nonce,
    method.toUpperCase(),
    target,
    createHash("sha256").update(bytesOf(body)).digest("hex"),
  ].join("\n");
}

/** 16 random bytes, hex: fresh for every request, retries included. */
export function newNonce() {
  return randomBytes(16).toString("hex");
}

// The HMAC key is the whole secret string's UTF-8 bytes, prefix included.
const hmac = (secret, text) => createHmac("sha256", secret).update(text, "utf8").digest();

/**
 * Signs one request. target: the path and query exactly as on the request
 * line; body: the exact bytes sent. Returns { headers, stringToSign }.
 */
export function sign({ keyId, secret, method, target, body, timestamp, nonce, scheme = KG1 }) {
  nonce = nonce || newNonce();
  timestamp = timestamp ?? Math.floor(Date.now() / 1000);
  if (scheme === KG1) {
    const text = stringToSign({ keyId, timestamp, nonce, method, target, body });
    const signature = hmac(secret, text).toString("hex");
    return {
      headers: { authorization: `${KG1} KeyId=${keyId}, Timestamp=${timestamp}, Nonce=${nonce}, Signature=${signature}` },
      stringToSign: text,
    };
  }
  if (scheme === RFC9421) return signRfc9421({ keyId, secret, method, target, body: bytesOf(body), timestamp, nonce });
  throw new TypeError(`unknown scheme ${scheme}: use "${KG1}" or "${RFC9421}"`);
}

// RFC 9421 with alg hmac-sha256, covering the method, the request target as
// sent and, when there is a body, its RFC 9530 Content-Digest.
function signRfc9421({ keyId, secret, method, target, body, timestamp, nonce }) {
  const headers = {};
  const components = ['"@method"', '"@request-target"'];
  const lines = [`"@method": ${method.toUpperCase()}`, `"@request-target": ${target}`];
  if (body.length > 0) {
    const digest = `sha-256=:${createHash("sha256").update(body).digest("base64")}:`;
    headers["content-digest"] = digest;
    components.push('"content-digest"');
    lines.push(`"content-digest": ${digest}`);
  }
  const params = `(${components.join(" ")});created=${timestamp};keyid="${keyId}";nonce="${nonce}";alg="hmac-sha256"`;
  lines.push(`"@signature-params": ${params}`);
  const base = lines.join("\n");
  headers["signature-input"] = `sig1=${params}`;
  headers["signature"] = `sig1=:${hmac(secret, base).toString("base64")}:`;
  return { headers, stringToSign: base };
}

/** Both strings to sign side by side, the first differing line marked with ">". */
export function diffLines(ours, theirs) {
  const a = ours.split("\n");
  const b = theirs.split("\n");
  const width = Math.max(4, ...a.map((line) => line.length));
  const out = [`  ${"ours".padEnd(width)} | server's`];
  let marked = false;
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const left = a[i] ?? "";
    const right = b[i] ?? "";
    let mark = " ";
    if (left !== right && !marked) {
      mark = ">";
      marked = true;
    }
    out.push(`${mark} ${left.padEnd(width)} | ${right}`);
  }
  if (!marked) out.push("  (the lines are equal: the secret differs)");
  return out.join("\n");
}

function parseRetryAfter(value) {
  if (value == null || !/^\s*\d+(\.\d+)?\s*$/.test(value)) return null; // an HTTP date: treated as absent
  return Number(value);
}

/** A request keygate refused, with the contract's error code. */
export class KeygateError extends Error {
  constructor({ code, status, message, requestId, serverTime, retryAfter, serverStringToSign, stringToSign, body }) {
    super(`${status} ${code}: ${message}${requestId ? ` (request id ${requestId})` : ""}`);
    this.name = "KeygateError";
    Object.assign(this, { code, status, requestId, serverTime, retryAfter, serverStringToSign, stringToSign, body });
    this.detail = message;
    const diff = this.diff();
    if (diff) this.message += `\n${diff}`;
  }

  /** For signature_mismatch: both strings to sign, the first differing line marked. */
  diff() {
    if (this.serverStringToSign == null || this.stringToSign == null) return null;
    return diffLines(this.stringToSign, this.serverStringToSign);
  }

  /** The refusal in an answer (status, headers with get(), body text), or null. */
  static parse(status, headers, text, stringToSign) {
    if (status < 400) return null;
    let error;
    try {
      error = JSON.parse(text).error;
    } catch {
      return null;
    }
    if (!error || typeof error.code !== "string") return null;
    return new KeygateError({
      code: error.code,
      status,
      message: String(error.message ?? ""),
      requestId: error.request_id ?? headers.get("x-request-id") ?? undefined,
      serverTime: error.server_time,
      retryAfter: parseRetryAfter(headers.get("retry-after")) ?? undefined,
      serverStringToSign: error.string_to_sign,
      stringToSign,
      body: error,
    });
  }

  /** The refusal in a Response from a keygate fetch, or null. Does not consume the response. */
  static async fromResponse(response) {
    const text = await response.clone().text();
    return KeygateError.parse(response.status, response.headers, text, signedOver.get(response));
  }
}

/** Throws a KeygateError when the response is a refusal; returns it otherwise. */
export async function raiseForRefusal(response) {
  const error = await KeygateError.fromResponse(response);
  if (error) throw error;
  return response;
}

// What each answered request was signed over, for KeygateError.fromResponse.
const signedOver = new WeakMap();

const DEFAULT_RETRY = { maxRetries: 2, maxWaitMs: 10_000, baseDelayMs: 250, retryNonIdempotent: false };

/**
 * Credentials, the corrected clock and the retry rules. The clock offset
 * learnt from a timestamp_out_of_range refusal's server_time is kept
 * (clockOffsetMs) and used for every later request: alert on it.
 */
export class Signer {
  #secret;

  constructor({ keyId, secret, scheme = KG1, retry = {}, correctClockSkew = true, maxBodyBytes = DEFAULT_MAX_BODY_BYTES, now = Date.now }) {
    if (!keyId || !secret) throw new TypeError("keyId and secret are required");
    this.keyId = keyId;
    this.#secret = secret;
    this.scheme = scheme;
    this.retry = { ...DEFAULT_RETRY, ...retry };
    this.correctClockSkew = correctClockSkew;
    this.maxBodyBytes = maxBodyBytes;
    this.now = now;
    this.clockOffsetMs = 0;
  }

  toJSON() {
    return { keyId: this.keyId, scheme: this.scheme }; // never the secret
  }

  sign(method, target, body) {
    const timestamp = Math.floor((this.now() + this.clockOffsetMs) / 1000);
    return sign({ keyId: this.keyId, secret: this.#secret, method, target, body, timestamp, scheme: this.scheme });
  }

  /**
   * Milliseconds to wait before signing again and re-sending, or null to
   * give this answer to the caller. attempts: { retries, skewCorrected },
   * one per call.
   */
  nextStep(attempts, method, status, headers, text) {
    if (status !== 401 && status !== 429 && status !== 503) return null;
    let error = null;
    try {
      error = JSON.parse(text).error ?? null;
    } catch {}
    const code = typeof error?.code === "string" ? error.code : null;
    if (status === 401) {
      if (code !== "timestamp_out_of_range" || !this.correctClockSkew || attempts.skewCorrected) return null;
      const serverTime = Number(error.server_time);
      if (!Number.isFinite(serverTime)) return null;
      // Refused before anything was recorded or forwarded: safe for any method.
      this.clockOffsetMs = serverTime * 1000 + 500 - this.now();
      attempts.skewCorrected = true;
      return 0;
    }
    if (code !== null && code !== "unavailable" && code !== "rate_limited") return null;
    if (!IDEMPOTENT_METHODS.has(method.toUpperCase()) && !this.retry.retryNonIdempotent) return null;
    if (attempts.retries >= this.retry.maxRetries) return null;
    const retryAfter = parseRetryAfter(headers.get("retry-after"));
    const wait = retryAfter != null ? retryAfter * 1000 : this.retry.baseDelayMs * 2 ** attempts.retries;
    if (wait > this.retry.maxWaitMs) return null;
    attempts.retries += 1;
    return wait * (1 + Math.random() * 0.2);
  }
}

const sleep = (ms, signal) =>
  new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(signal.reason);
    }, { once: true });
  });

async function readLimited(stream, limit) {
  const chunks = [];
  let length = 0;
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    length += value.byteLength;
    if (length > limit) {
      await reader.cancel();
      throw new RangeError(`the body is over maxBodyBytes (${limit}); it must be buffered to be signed`);
    }
    chunks.push(value);
  }
  const out = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.byteLength;
  }
  return out;
}

/**
 * A fetch that signs every request over the exact bytes it sends, retries
 * 503/429 as the Signer's retry options say (re-signing with a fresh nonce
 * and timestamp), and corrects clock skew. Same signature as fetch.
 *
 *   const fetch = keygateFetch({ keyId, secret });
 *   const answer = await raiseForRefusal(await fetch(`${base}/v1/whoami`));
 *   fetch.signer.clockOffsetMs
 */
export function keygateFetch(options) {
  const signer = options instanceof Signer ? options : new Signer(options);
  const baseFetch = options.fetch ?? globalThis.fetch;
  async function signedFetch(input, init) {
    const request = new Request(input, init);
    const body = request.body ? await readLimited(request.body, signer.maxBodyBytes) : new Uint8Array(0);
    // What fetch puts on the request line: the URL's serialized path and query.
    const url = new URL(request.url);
    const target = url.pathname + url.search;
    const attempts = { retries: 0, skewCorrected: false };
    for (;;) {
      const signed = signer.sign(request.method, target, body);
      const headers = new Headers(request.headers);
      for (const [name, value] of Object.entries(signed.headers)) headers.set(name, value);
      const response = await baseFetch(request.url, {
        method: request.method,
        headers,
        body: request.method === "GET" || request.method === "HEAD" ? undefined : body,
        redirect: init?.redirect ?? "manual",
        signal: request.signal,
      });
      signedOver.set(response, signed.stringToSign);
      const refused = response.status === 401 || response.status === 429 || response.status === 503;
      const wait = refused
        ? signer.nextStep(attempts, request.method, response.status, response.headers, await response.clone().text())
        : null;
      if (wait == null) return response;
      await response.body?.cancel();
      await sleep(wait, request.signal);
    }
  }
  signedFetch.signer = signer;
  return signedFetch;
}

/**
 * An undici interceptor (`agent.compose(keygateInterceptor({ keyId, secret }))`)
 * that signs each dispatched request: opts.path is exactly the request line's
 * target. The body must be a string or bytes (a stream cannot be signed
 * before it is sent: buffer it). It signs only; compose undici's retry
 * interceptor before it and each retry is signed afresh. Skew correction
 * and the refusal-aware retries are keygateFetch's.
 */
export function keygateInterceptor(options) {
  const signer = options instanceof Signer ? options : new Signer(options);
  const interceptor = (dispatch) => (opts, handler) => {
    let body;
    try {
      body = bytesOf(opts.body);
    } catch (error) {
      handler.onError?.(error);
      return true;
    }
    const signed = signer.sign(opts.method, opts.path, body);
    let headers = opts.headers ?? {};
    if (Array.isArray(headers)) {
      headers = [...headers];
      for (const [name, value] of Object.entries(signed.headers)) headers.push(name, value);
    } else {
      headers = { ...(headers[Symbol.iterator] ? Object.fromEntries(headers) : headers), ...signed.headers };
    }
    return dispatch({ ...opts, headers }, handler);
  };
  interceptor.signer = signer;
  return interceptor;
}
