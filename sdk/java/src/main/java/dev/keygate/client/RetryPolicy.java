package dev.keygate.client;

import java.time.Duration;

/**
 * When a refused request is signed again and re-sent. Only 503
 * ({@code unavailable}) and 429 ({@code rate_limited}) are retried, after
 * their Retry-After (or {@code baseDelay} doubled each time when there is
 * none), with up to 20% jitter. A wait longer than {@code maxWait} is not
 * waited: the answer is returned. POST and PATCH are retried only with
 * {@code retryNonIdempotent}: in gateway mode a 503 may come from the
 * upstream after it acted. {@code nonce_reused} and signature errors are
 * never retried.
 */
public record RetryPolicy(int maxRetries, Duration maxWait, Duration baseDelay, boolean retryNonIdempotent) {
    public static final RetryPolicy DEFAULT = new RetryPolicy(2, Duration.ofSeconds(10), Duration.ofMillis(250), false);
    public static final RetryPolicy NONE = new RetryPolicy(0, Duration.ZERO, Duration.ZERO, false);

    public RetryPolicy withRetryNonIdempotent(boolean retry) {
        return new RetryPolicy(maxRetries, maxWait, baseDelay, retry);
    }
}
