export declare const KG1: "KG1-HMAC-SHA256";
export declare const RFC9421: "rfc9421";
export type Scheme = typeof KG1 | typeof RFC9421;
export declare const DEFAULT_MAX_BODY_BYTES: number;
export declare const IDEMPOTENT_METHODS: ReadonlySet<string>;

/** The exact bytes sent: a string is taken as UTF-8. */
export type Body = string | Uint8Array | ArrayBuffer | ArrayBufferView | null | undefined;

export interface SignInput {
  keyId: string;
  secret: string;
  method: string;
  /** Path and query exactly as on the request line, e.g. "/v1/orders?id=7&q=a%20b". */
  target: string;
  body?: Body;
  /** Unix seconds; now when absent. */
  timestamp?: number;
  /** Fresh randomness when absent. */
  nonce?: string;
  scheme?: Scheme;
}

export interface Signed {
  /** Lower-case header names: authorization, or signature-input, signature and content-digest. */
  headers: Record<string, string>;
  stringToSign: string;
}

export declare function sign(input: SignInput): Signed;
export declare function stringToSign(input: {
  keyId: string;
  timestamp: number | string;
  nonce: string;
  method: string;
  target: string;
  body?: Body;
}): string;
export declare function newNonce(): string;
export declare function diffLines(ours: string, theirs: string): string;

export interface RetryOptions {
  /** Retries after the first attempt (default 2). */
  maxRetries?: number;
  /** A Retry-After longer than this is not waited: the answer is returned (default 10000). */
  maxWaitMs?: number;
  /** The first delay when there is no Retry-After, doubled each time (default 250). */
  baseDelayMs?: number;
  /** Retry POST and PATCH too (default false: in gateway mode a 503 may come from an upstream that acted). */
  retryNonIdempotent?: boolean;
}

export interface SignerOptions {
  keyId: string;
  secret: string;
  scheme?: Scheme;
  retry?: RetryOptions;
  /** Learn the server's clock from timestamp_out_of_range and retry once (default true). */
  correctClockSkew?: boolean;
  /** A streamed body is buffered to be signed, up to this (default 1 MiB). */
  maxBodyBytes?: number;
  /** The local clock, milliseconds (default Date.now). */
  now?: () => number;
}

export interface Attempts {
  retries: number;
  skewCorrected: boolean;
}

export declare class Signer {
  constructor(options: SignerOptions);
  readonly keyId: string;
  readonly scheme: Scheme;
  readonly retry: Required<RetryOptions>;
  readonly correctClockSkew: boolean;
  readonly maxBodyBytes: number;
  /** Milliseconds added to the local clock, learnt from the server. */
  clockOffsetMs: number;
  sign(method: string, target: string, body?: Body): Signed;
  nextStep(attempts: Attempts, method: string, status: number, headers: { get(name: string): string | null }, text: string): number | null;
}

export declare class KeygateError extends Error {
  readonly code: string;
  readonly status: number;
  /** The server's sentence. */
  readonly detail: string;
  readonly requestId?: string;
  /** With timestamp_out_of_range: the server's Unix time. */
  readonly serverTime?: number;
  /** With 429 and 503: seconds. */
  readonly retryAfter?: number;
  /** With signature_mismatch: what the server signed over. */
  readonly serverStringToSign?: string;
  /** What this client signed over. */
  readonly stringToSign?: string;
  readonly body: Record<string, unknown>;
  diff(): string | null;
  static parse(status: number, headers: { get(name: string): string | null }, text: string, stringToSign?: string): KeygateError | null;
  static fromResponse(response: Response): Promise<KeygateError | null>;
}

export declare function raiseForRefusal(response: Response): Promise<Response>;

export type KeygateFetch = ((input: RequestInfo | URL, init?: RequestInit) => Promise<Response>) & { signer: Signer };

/** A fetch that signs, retries safely and corrects clock skew. Redirects default to "manual". */
export declare function keygateFetch(options: (SignerOptions & { fetch?: typeof fetch }) | Signer): KeygateFetch;

/** An undici interceptor (Dispatcher.compose) that signs each dispatched request. */
export declare function keygateInterceptor(
  options: SignerOptions | Signer
): ((dispatch: (opts: any, handler: any) => boolean) => (opts: any, handler: any) => boolean) & { signer: Signer };
