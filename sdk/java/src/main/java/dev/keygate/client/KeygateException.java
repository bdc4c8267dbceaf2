package dev.keygate.client;

import java.net.http.HttpHeaders;
import java.time.Duration;
import java.util.Map;
import java.util.Optional;

/** A request keygate refused, with the contract's error code. */
public class KeygateException extends Exception {
    private static final long serialVersionUID = 1L;
    private final String code;
    private final int status;
    private final String detail;
    private final String requestId;
    private final Long serverTime;
    private final Duration retryAfter;
    private final String serverStringToSign;
    private final String stringToSign;

    public KeygateException(String code, int status, String detail, String requestId, Long serverTime,
                            Duration retryAfter, String serverStringToSign, String stringToSign) {
        super(status + " " + code + ": " + detail + (requestId != null ? " (request id " + requestId + ")" : "")
                + (serverStringToSign != null && stringToSign != null
                        ? "\n" + Signing.diffLines(stringToSign, serverStringToSign) : ""));
        this.code = code;
        this.status = status;
        this.detail = detail;
        this.requestId = requestId;
        this.serverTime = serverTime;
        this.retryAfter = retryAfter;
        this.serverStringToSign = serverStringToSign;
        this.stringToSign = stringToSign;
    }

    public String code() { return code; }
    public int status() { return status; }
    /** The server's sentence. */
    public String detail() { return detail; }
    public Optional<String> requestId() { return Optional.ofNullable(requestId); }
    /** With timestamp_out_of_range: the server's Unix time. */
    public Optional<Long> serverTime() { return Optional.ofNullable(serverTime); }
    /** With 429 and 503. */
    public Optional<Duration> retryAfter() { return Optional.ofNullable(retryAfter); }
    /** With signature_mismatch: what the server signed over. */
    public Optional<String> serverStringToSign() { return Optional.ofNullable(serverStringToSign); }
    /** What this client signed over. */
    public Optional<String> stringToSign() { return Optional.ofNullable(stringToSign); }

    /** Both strings to sign, the first differing line marked, when the server sent its own. */
    public Optional<String> diff() {
        if (serverStringToSign == null || stringToSign == null) return Optional.empty();
        return Optional.of(Signing.diffLines(stringToSign, serverStringToSign));
    }

    /** The refusal in an answer, or empty when it is not one. */
    public static Optional<KeygateException> parse(int status, HttpHeaders headers, String body, String stringToSign) {
        if (status < 400 || body == null) return Optional.empty();
        Object error;
        try {
            Object parsed = Json.parse(body);
            error = parsed instanceof Map<?, ?> map ? map.get("error") : null;
        } catch (IllegalArgumentException e) {
            return Optional.empty();
        }
        if (!(error instanceof Map<?, ?> fields) || !(fields.get("code") instanceof String code)) return Optional.empty();
        String requestId = fields.get("request_id") instanceof String id ? id : headers.firstValue("x-request-id").orElse(null);
        Long serverTime = fields.get("server_time") instanceof Long time ? time : null;
        String server = fields.get("string_to_sign") instanceof String s ? s : null;
        String message = fields.get("message") instanceof String m ? m : "";
        return Optional.of(new KeygateException(code, status, message, requestId, serverTime,
                parseRetryAfter(headers).orElse(null), server, stringToSign));
    }

    static Optional<Duration> parseRetryAfter(HttpHeaders headers) {
        Optional<String> value = headers.firstValue("retry-after");
        if (value.isEmpty() || !value.get().trim().matches("\\d+(\\.\\d+)?")) return Optional.empty(); // a date: absent
        return Optional.of(Duration.ofMillis((long) (Double.parseDouble(value.get().trim()) * 1000)));
    }
}
