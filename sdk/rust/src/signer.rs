//! Credentials, the corrected clock and the retry rules.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::refusal::parse_retry_after;
use crate::signing::{sign, Scheme, SignRequest, Signed};

/// RFC 9110 section 9.2.2: repeating these has the effect of sending once.
pub const IDEMPOTENT_METHODS: [&str; 6] = ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"];

/// When a refused request is signed again and re-sent.
///
/// Only 503 (`unavailable`) and 429 (`rate_limited`) are retried, after
/// their `Retry-After` (or `base_delay` doubled each time when there is
/// none), with up to 20 % jitter. A wait longer than `max_wait` is not
/// waited: the answer is returned. POST and PATCH are retried only with
/// `retry_non_idempotent`: in gateway mode a 503 may come from the upstream
/// after it acted. `nonce_reused` and signature errors are never retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_retries: u32,
    pub max_wait: Duration,
    pub base_delay: Duration,
    pub retry_non_idempotent: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 2,
            max_wait: Duration::from_secs(10),
            base_delay: Duration::from_millis(250),
            retry_non_idempotent: false,
        }
    }
}

impl RetryPolicy {
    /// Every answer is returned as it comes.
    pub const NONE: RetryPolicy = RetryPolicy {
        max_retries: 0,
        max_wait: Duration::ZERO,
        base_delay: Duration::ZERO,
        retry_non_idempotent: false,
    };
}

/// What one call has used of its retries.
#[derive(Debug, Default)]
pub struct Attempts {
    pub retries: u32,
    pub skew_corrected: bool,
}

/// Signs requests for one key, and decides what to do with a refusal. The
/// clock offset learnt from a `timestamp_out_of_range` refusal's
/// `server_time` is kept ([`Signer::clock_offset_millis`]) and used for
/// every later request: alert on it if it grows.
pub struct Signer {
    key_id: String,
    secret: String,
    pub scheme: Scheme,
    pub retry: RetryPolicy,
    pub correct_clock_skew: bool,
    /// A body is signed only when it is bytes in memory, up to this.
    pub max_body_bytes: usize,
    clock: fn() -> SystemTime,
    offset_millis: AtomicI64,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl Signer {
    pub fn new(key_id: impl Into<String>, secret: impl Into<String>) -> Signer {
        Signer {
            key_id: key_id.into(),
            secret: secret.into(),
            scheme: Scheme::Kg1,
            retry: RetryPolicy::default(),
            correct_clock_skew: true,
            max_body_bytes: 1 << 20,
            clock: SystemTime::now,
            offset_millis: AtomicI64::new(0),
        }
    }

    pub fn scheme(mut self, scheme: Scheme) -> Signer {
        self.scheme = scheme;
        self
    }

    pub fn retry(mut self, retry: RetryPolicy) -> Signer {
        self.retry = retry;
        self
    }

    pub fn correct_clock_skew(mut self, correct: bool) -> Signer {
        self.correct_clock_skew = correct;
        self
    }

    pub fn max_body_bytes(mut self, max: usize) -> Signer {
        self.max_body_bytes = max;
        self
    }

    /// The local clock (for tests).
    pub fn clock(mut self, clock: fn() -> SystemTime) -> Signer {
        self.clock = clock;
        self
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Milliseconds added to the local clock, learnt from the server.
    pub fn clock_offset_millis(&self) -> i64 {
        self.offset_millis.load(Ordering::Relaxed)
    }

    fn now_millis(&self) -> i64 {
        (self.clock)()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    }

    /// Signs with the corrected clock and a fresh nonce.
    pub fn sign(&self, method: &str, target: &str, body: &[u8]) -> Signed {
        let timestamp = (self.now_millis() + self.clock_offset_millis())
            .div_euclid(1000)
            .max(0) as u64;
        sign(&SignRequest {
            key_id: &self.key_id,
            secret: &self.secret,
            method,
            target,
            body,
            timestamp,
            nonce: None,
            scheme: self.scheme,
        })
    }

    /// How long to wait before signing again and re-sending, or `None` to
    /// give this answer to the caller.
    pub fn next_step(
        &self,
        attempts: &mut Attempts,
        method: &str,
        status: u16,
        retry_after: Option<&str>,
        body: &[u8],
    ) -> Option<Duration> {
        if !matches!(status, 401 | 429 | 503) {
            return None;
        }
        let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let error = parsed.as_ref().and_then(|p| p.get("error"));
        let code = error.and_then(|e| e.get("code")).and_then(|c| c.as_str());
        if status == 401 {
            if code != Some("timestamp_out_of_range")
                || !self.correct_clock_skew
                || attempts.skew_corrected
            {
                return None;
            }
            let server_time = error?.get("server_time")?.as_i64()?;
            // Refused before anything was recorded or forwarded: safe for any method.
            self.offset_millis.store(
                server_time * 1000 + 500 - self.now_millis(),
                Ordering::Relaxed,
            );
            attempts.skew_corrected = true;
            return Some(Duration::ZERO);
        }
        if code.is_some_and(|c| c != "unavailable" && c != "rate_limited") {
            return None;
        }
        let idempotent = IDEMPOTENT_METHODS
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method));
        if !idempotent && !self.retry.retry_non_idempotent {
            return None;
        }
        if attempts.retries >= self.retry.max_retries {
            return None;
        }
        let wait = retry_after
            .and_then(parse_retry_after)
            .unwrap_or_else(|| self.retry.base_delay * 2u32.saturating_pow(attempts.retries));
        if wait > self.retry.max_wait {
            return None;
        }
        attempts.retries += 1;
        Some(wait.mul_f64(1.0 + rand::random::<f64>() * 0.2))
    }
}
