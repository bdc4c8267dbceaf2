// Compiled with tsc --noEmit: the published .d.ts describe the API as used.
import { keygateFetch, keygateInterceptor, raiseForRefusal, KeygateError, sign, Signer, RFC9421 } from "keygate-client";

async function partner(keyId: string, secret: string): Promise<string> {
  const fetch = keygateFetch({ keyId, secret, retry: { maxRetries: 3, retryNonIdempotent: true }, scheme: RFC9421 });
  const offset: number = fetch.signer.clockOffsetMs;
  try {
    const answer = await raiseForRefusal(await fetch("https://api.example.com/v1/whoami"));
    return `${offset} ${(await answer.json()).key_id}`;
  } catch (error) {
    if (error instanceof KeygateError) {
      const code: string = error.code;
      const diff: string | null = error.diff();
      return `${code} ${error.requestId ?? ""} ${diff ?? ""} ${error.serverTime ?? 0}`;
    }
    throw error;
  }
}

const signed = sign({ keyId: "pk_x", secret: "sk_y", method: "GET", target: "/", timestamp: 1 });
const header: string = signed.headers["authorization"];
const interceptor = keygateInterceptor(new Signer({ keyId: "pk_x", secret: "sk_y" }));
void partner;
void header;
void interceptor.signer.keyId;
