package dev.keygate.client;

import java.io.ByteArrayOutputStream;
import java.net.URI;
import java.net.http.HttpHeaders;
import java.net.http.HttpRequest;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.text.Normalizer;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Flow;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.LongSupplier;

/**
 * Signs {@link HttpRequest}s for one key, and decides what to do with a
 * refusal. The clock offset learnt from a timestamp_out_of_range refusal's
 * server_time is kept ({@link #clockOffsetMillis()}) and used for every
 * later request: alert on it if it grows.
 */
public final class KeygateSigner {
    /** A body is buffered to be signed, up to this by default. */
    public static final long DEFAULT_MAX_BODY_BYTES = 1 << 20;
    // RFC 9110 section 9.2.2: repeating these has the effect of sending once.
    private static final Set<String> IDEMPOTENT = Set.of("GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE");

    private final String keyId;
    private final String secret;
    private final Scheme scheme;
    private final RetryPolicy retry;
    private final boolean correctClockSkew;
    private final long maxBodyBytes;
    private final LongSupplier clockMillis;
    private final AtomicLong offsetMillis = new AtomicLong();

    private KeygateSigner(Builder b) {
        this.keyId = Objects.requireNonNull(b.keyId, "keyId");
        this.secret = Objects.requireNonNull(b.secret, "secret");
        this.scheme = b.scheme;
        this.retry = b.retry;
        this.correctClockSkew = b.correctClockSkew;
        this.maxBodyBytes = b.maxBodyBytes;
        this.clockMillis = b.clockMillis;
    }

    public static Builder builder(String keyId, String secret) {
        return new Builder(keyId, secret);
    }

    /** Options; every one has a default. */
    public static final class Builder {
        private final String keyId;
        private final String secret;
        private Scheme scheme = Scheme.KG1;
        private RetryPolicy retry = RetryPolicy.DEFAULT;
        private boolean correctClockSkew = true;
        private long maxBodyBytes = DEFAULT_MAX_BODY_BYTES;
        private LongSupplier clockMillis = System::currentTimeMillis;

        private Builder(String keyId, String secret) {
            this.keyId = keyId;
            this.secret = secret;
        }

        public Builder scheme(Scheme scheme) { this.scheme = scheme; return this; }
        public Builder retry(RetryPolicy retry) { this.retry = retry; return this; }
        public Builder correctClockSkew(boolean correct) { this.correctClockSkew = correct; return this; }
        public Builder maxBodyBytes(long max) { this.maxBodyBytes = max; return this; }
        public Builder clockMillis(LongSupplier clock) { this.clockMillis = clock; return this; }
        public KeygateSigner build() { return new KeygateSigner(this); }
    }

    public String keyId() { return keyId; }
    public RetryPolicy retry() { return retry; }
    public long maxBodyBytes() { return maxBodyBytes; }

    @Override
    public String toString() {
        return "KeygateSigner[keyId=" + keyId + ", scheme=" + scheme + "]"; // never the secret
    }

    /** Milliseconds added to the local clock, learnt from the server. */
    public long clockOffsetMillis() {
        return offsetMillis.get();
    }

    /** A signed request and what it was signed over. */
    public record SignedRequest(HttpRequest request, String stringToSign) {}

    /**
     * A copy of the request, signed, whose body is the exact bytes signed
     * (the original's body publisher is read once, up to maxBodyBytes).
     */
    public SignedRequest sign(HttpRequest request) {
        return sign(request, bodyOf(request, maxBodyBytes));
    }

    SignedRequest sign(HttpRequest request, byte[] body) {
        long timestamp = Math.floorDiv(clockMillis.getAsLong() + offsetMillis.get(), 1000);
        Signed signed = Signing.sign(keyId, secret, request.method(), requestTarget(request.uri()), body,
                timestamp, null, scheme);
        HttpRequest.Builder copy = HttpRequest.newBuilder(request, (name, value) -> true);
        boolean hasBody = body.length > 0 || request.bodyPublisher().map(p -> p.contentLength() != 0).orElse(false);
        copy.method(request.method(), hasBody ? HttpRequest.BodyPublishers.ofByteArray(body) : HttpRequest.BodyPublishers.noBody());
        for (Map.Entry<String, String> header : signed.headers().entrySet()) copy.setHeader(header.getKey(), header.getValue());
        return new SignedRequest(copy.build(), signed.stringToSign());
    }

    /**
     * The request line's target exactly as java.net.http writes it: the raw
     * path ("/" when empty) and query, with anything outside ASCII
     * NFC-normalised and percent-encoded as UTF-8.
     */
    public static String requestTarget(URI uri) {
        String path = uri.getRawPath();
        if (path == null || path.isEmpty()) path = "/";
        String query = uri.getRawQuery();
        String target = query == null || query.isEmpty() ? path : path + "?" + query;
        if (target.chars().allMatch(c -> c < 0x80)) return target;
        StringBuilder out = new StringBuilder();
        for (byte b : Normalizer.normalize(target, Normalizer.Form.NFC).getBytes(StandardCharsets.UTF_8)) {
            if (b >= 0) out.append((char) b);
            else out.append('%').append(String.format("%02X", b & 0xff));
        }
        return out.toString();
    }

    /** Reads a request's body publisher in full, up to limit bytes. */
    static byte[] bodyOf(HttpRequest request, long limit) {
        if (request.bodyPublisher().isEmpty()) return new byte[0];
        CompletableFuture<byte[]> done = new CompletableFuture<>();
        request.bodyPublisher().get().subscribe(new Flow.Subscriber<ByteBuffer>() {
            private final ByteArrayOutputStream bytes = new ByteArrayOutputStream();
            private Flow.Subscription subscription;

            public void onSubscribe(Flow.Subscription s) { subscription = s; s.request(Long.MAX_VALUE); }
            public void onNext(ByteBuffer buffer) {
                byte[] chunk = new byte[buffer.remaining()];
                buffer.get(chunk);
                bytes.write(chunk, 0, chunk.length);
                if (bytes.size() > limit) {
                    subscription.cancel();
                    done.completeExceptionally(new BodyTooLargeException(limit));
                }
            }
            public void onError(Throwable error) { done.completeExceptionally(error); }
            public void onComplete() { done.complete(bytes.toByteArray()); }
        });
        try {
            return done.get(60, TimeUnit.SECONDS);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof BodyTooLargeException tooLarge) throw tooLarge;
            throw new IllegalStateException("reading the body to sign: " + e.getCause(), e.getCause());
        } catch (InterruptedException | TimeoutException e) {
            throw new IllegalStateException("reading the body to sign: " + e, e);
        }
    }

    /** A body over maxBodyBytes cannot be buffered to be signed. */
    public static final class BodyTooLargeException extends IllegalArgumentException {
        private static final long serialVersionUID = 1L;

        BodyTooLargeException(long limit) {
            super("the body is over maxBodyBytes (" + limit + "); it must be buffered to be signed");
        }
    }

    /** What one call has used of its retries. */
    static final class Attempts {
        int retries;
        boolean skewCorrected;
    }

    /**
     * Milliseconds to wait before signing again and re-sending, or -1 to
     * give this answer to the caller.
     */
    long nextStepMillis(Attempts attempts, String method, int status, HttpHeaders headers, String body) {
        if (status != 401 && status != 429 && status != 503) return -1;
        KeygateException refusal = KeygateException.parse(status, headers, body, null).orElse(null);
        String code = refusal == null ? null : refusal.code();
        if (status == 401) {
            if (!"timestamp_out_of_range".equals(code) || !correctClockSkew || attempts.skewCorrected
                    || refusal.serverTime().isEmpty()) return -1;
            // Refused before anything was recorded or forwarded: safe for any method.
            offsetMillis.set(refusal.serverTime().get() * 1000 + 500 - clockMillis.getAsLong());
            attempts.skewCorrected = true;
            return 0;
        }
        if (code != null && !code.equals("unavailable") && !code.equals("rate_limited")) return -1;
        if (!IDEMPOTENT.contains(method.toUpperCase(Locale.ROOT)) && !retry.retryNonIdempotent()) return -1;
        if (attempts.retries >= retry.maxRetries()) return -1;
        long wait = KeygateException.parseRetryAfter(headers)
                .map(d -> d.toMillis())
                .orElse(retry.baseDelay().toMillis() << attempts.retries);
        if (wait > retry.maxWait().toMillis()) return -1;
        attempts.retries++;
        return wait + ThreadLocalRandom.current().nextLong(wait / 5 + 1);
    }
}
