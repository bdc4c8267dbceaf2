package dev.keygate.client;

import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpHeaders;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.net.http.HttpTimeoutException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.ExecutionException;
import javax.net.ssl.SSLSession;

/**
 * Sends requests through an {@link HttpClient}, each signed over the exact
 * bytes sent, retried as the signer's {@link RetryPolicy} says (signed
 * afresh each time: new nonce, new timestamp) and with clock skew
 * corrected. Answers are read in full (a refusal must be read to decide),
 * then handed to your BodyHandler; for a large download, sign with
 * {@link KeygateSigner#sign} and call your HttpClient yourself.
 */
public final class KeygateClient {
    private final HttpClient http;
    private final KeygateSigner signer;

    public KeygateClient(HttpClient http, KeygateSigner signer) {
        this.http = http;
        this.signer = signer;
    }

    public KeygateSigner signer() {
        return signer;
    }

    /** Signs and sends; a refusal comes back as a response (see {@link #refusal}). */
    public <T> KeygateResponse<T> send(HttpRequest request, HttpResponse.BodyHandler<T> handler)
            throws IOException, InterruptedException {
        byte[] body = KeygateSigner.bodyOf(request, signer.maxBodyBytes());
        KeygateSigner.Attempts attempts = new KeygateSigner.Attempts();
        HttpResponse<byte[]> previous = null;
        for (;;) {
            KeygateSigner.SignedRequest signed = signer.sign(request, body);
            HttpResponse<byte[]> answer = sendResendingOnce(signed.request());
            String text = new String(answer.body(), StandardCharsets.UTF_8);
            long wait = signer.nextStepMillis(attempts, request.method(), answer.statusCode(), answer.headers(), text);
            if (wait < 0) return new KeygateResponse<>(answer, handOver(answer, handler), signed.stringToSign(), previous);
            previous = answer;
            Thread.sleep(wait);
        }
    }

    /**
     * Sends a signed request, and sends it again, byte for byte, if the
     * connection fails before an answer. A server may close an idle
     * keep-alive connection at any moment (RFC 9112, section 9.3.1), and
     * java.net.http then throws ("header parser received no bytes") instead
     * of resending. The resend carries the same nonce, so keygate accepts
     * at most one of the two, whatever the method: if the first did get
     * through, the resend is refused with {@code nonce_reused} and this
     * throws, saying the request was accepted but its answer lost.
     */
    private HttpResponse<byte[]> sendResendingOnce(HttpRequest signed) throws IOException, InterruptedException {
        try {
            return http.send(signed, HttpResponse.BodyHandlers.ofByteArray());
        } catch (HttpTimeoutException e) {
            throw e; // the caller's own limit: spent, not a dropped connection
        } catch (IOException dropped) {
            HttpResponse<byte[]> again = http.send(signed, HttpResponse.BodyHandlers.ofByteArray());
            boolean firstGotThrough = KeygateException.parse(again.statusCode(), again.headers(),
                    new String(again.body(), StandardCharsets.UTF_8), null)
                    .map(refusal -> "nonce_reused".equals(refusal.code()))
                    .orElse(false);
            if (firstGotThrough) {
                throw new IOException("the connection closed before the answer; keygate had accepted the request"
                        + " (its resend was refused as nonce_reused), so that answer is lost", dropped);
            }
            return again;
        }
    }

    /** As {@link #send}, but a refusal with a code is thrown as a KeygateException. */
    public <T> HttpResponse<T> sendOrThrow(HttpRequest request, HttpResponse.BodyHandler<T> handler)
            throws IOException, InterruptedException, KeygateException {
        KeygateResponse<T> response = send(request, handler);
        Optional<KeygateException> refused = refusal(response);
        if (refused.isPresent()) throw refused.get();
        return response;
    }

    /** The refusal in a response from this client, with both strings to sign. */
    public static Optional<KeygateException> refusal(KeygateResponse<?> response) {
        return KeygateException.parse(response.statusCode(), response.headers(),
                new String(response.rawBody(), StandardCharsets.UTF_8), response.stringToSign());
    }

    private static <T> T handOver(HttpResponse<byte[]> answer, HttpResponse.BodyHandler<T> handler) throws IOException {
        HttpResponse.ResponseInfo info = new HttpResponse.ResponseInfo() {
            public int statusCode() { return answer.statusCode(); }
            public HttpHeaders headers() { return answer.headers(); }
            public HttpClient.Version version() { return answer.version(); }
        };
        HttpResponse.BodySubscriber<T> subscriber = handler.apply(info);
        subscriber.onSubscribe(new java.util.concurrent.Flow.Subscription() {
            public void request(long n) {}
            public void cancel() {}
        });
        if (answer.body().length > 0) subscriber.onNext(List.of(ByteBuffer.wrap(answer.body())));
        subscriber.onComplete();
        try {
            return subscriber.getBody().toCompletableFuture().get();
        } catch (ExecutionException e) {
            throw new IOException(e.getCause());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException(e);
        }
    }

    /** An answer, with what its request was signed over and the raw bytes of its body. */
    public static final class KeygateResponse<T> implements HttpResponse<T> {
        private final HttpResponse<byte[]> raw;
        private final T body;
        private final String stringToSign;
        private final HttpResponse<byte[]> previous;

        KeygateResponse(HttpResponse<byte[]> raw, T body, String stringToSign, HttpResponse<byte[]> previous) {
            this.raw = raw;
            this.body = body;
            this.stringToSign = stringToSign;
            this.previous = previous;
        }

        public String stringToSign() { return stringToSign; }
        public byte[] rawBody() { return raw.body(); }
        public int statusCode() { return raw.statusCode(); }
        public HttpRequest request() { return raw.request(); }
        /** The answer before the last retry, if any. */
        public Optional<HttpResponse<T>> previousResponse() {
            return Optional.ofNullable(previous).map(p -> new KeygateResponse<T>(p, null, null, null));
        }
        public HttpHeaders headers() { return raw.headers(); }
        public T body() { return body; }
        public Optional<SSLSession> sslSession() { return raw.sslSession(); }
        public URI uri() { return raw.uri(); }
        public HttpClient.Version version() { return raw.version(); }
    }
}
