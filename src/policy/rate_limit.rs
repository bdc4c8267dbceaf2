//! Requests per second with a burst, for an application or a key
//! (CONTRACT.md section 8), counted by GCRA in one atomic word per limit
//! (see [`Limiter`]). Only accepted requests count: an allowance taken by
//! a request that then proves to be a replay is given back.
//!
//! Each keygate instance counts the requests it serves itself (as Kong's
//! `local` policy does): a shared count would put a database round trip
//! in front of every signed request. With N instances behind a balancer a
//! partner can reach up to N times the limit; see the README.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::clock::Clock;

/// Bounds that keep a limit meaningful: beyond a million a second there is
/// nothing left to limit.
pub const MAX_PER_SECOND: f64 = 1_000_000.0;
/// One request in 1000 s: slower than that is not a rate but a revocation.
pub const MIN_PER_SECOND: f64 = 0.001;
pub const MAX_BURST: u32 = 1_000_000;

/// As the admin API shows it. `burst` is how many requests may arrive at
/// once after a quiet spell; `per_second` how fast the allowance refills.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// The admin API's input: `burst` may be left out (then one second's worth).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitDocument {
    per_second: Option<f64>,
    burst: Option<f64>,
}

impl RateLimit {
    pub fn parse(document: RateLimitDocument) -> Result<RateLimit, String> {
        let per_second = document
            .per_second
            .ok_or("rate_limit needs per_second (requests per second, e.g. 50)")?;
        if !(MIN_PER_SECOND..=MAX_PER_SECOND).contains(&per_second) {
            return Err(format!(
                "rate_limit.per_second must be a number from {MIN_PER_SECOND} to {MAX_PER_SECOND}"
            ));
        }
        let burst = match document.burst {
            None => per_second.ceil().max(1.0),
            Some(burst) => burst,
        };
        if !(burst.fract() == 0.0 && (1.0..=f64::from(MAX_BURST)).contains(&burst)) {
            return Err(format!(
                "rate_limit.burst must be a whole number from 1 to {MAX_BURST}"
            ));
        }
        Ok(RateLimit {
            per_second,
            burst: burst as u32,
        })
    }

    /// As the admin API shows it: `50`, not `50.0`, for a whole rate.
    pub fn to_json(&self) -> Value {
        let per_second = if self.per_second.fract() == 0.0 {
            json!(self.per_second as u64)
        } else {
            json!(self.per_second)
        };
        json!({ "per_second": per_second, "burst": self.burst })
    }

    /// The time one request's allowance takes to come back.
    fn period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second).max(Duration::from_nanos(1))
    }
}

/// Over the limit: what the 429 says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit {
    /// Whole seconds until a request would be accepted again (at least 1:
    /// `Retry-After` has no finer unit).
    pub retry_after_secs: u64,
    /// The burst: the most requests the limit lets through at once.
    pub limit: u32,
    /// Seconds for an empty allowance to fill up again.
    pub window_secs: u64,
}

/// Within the limit: what an accepted request's `RateLimit-*` fields say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// The burst.
    pub limit: u32,
    /// Requests that may follow at once.
    pub remaining: u32,
    /// Whole seconds until the allowance is full again.
    pub reset_secs: u64,
}

impl Allowance {
    /// The IETF httpapi draft's fields for this allowance, as (name, value):
    /// on every answer under a limit, the 429 included (remaining 0).
    pub fn fields(&self) -> [(&'static str, String); 3] {
        [
            ("RateLimit-Limit", self.limit.to_string()),
            ("RateLimit-Remaining", self.remaining.to_string()),
            ("RateLimit-Reset", self.reset_secs.to_string()),
        ]
    }
}

/// One limit's state: the generic cell rate algorithm (GCRA, as in
/// governor and ATM networks), kept by hand for one reason: a request
/// whose allowance was taken may turn out to be a replay only when its
/// nonce is recorded, after the limit was checked, and then its allowance
/// must be given back ([`Limiter::give_back`]), which governor cannot do.
///
/// The state is one word, the "theoretical arrival time" (TAT): when the
/// allowance would be full again had every accepted request come at the
/// rate. A request is allowed when taking one period from the allowance
/// leaves the TAT at most `burst` periods ahead of now. One atomic word,
/// no lock, no background task, exact at any rate.
pub struct Limiter {
    limit: RateLimit,
    /// One request's share of the allowance, in nanoseconds.
    period_nanos: u64,
    /// How far ahead of now the TAT may run: `burst` periods.
    tolerance_nanos: u64,
    /// The TAT, in nanoseconds of `clock`'s monotonic time.
    theoretical_arrival: AtomicU64,
    clock: Clock,
}

impl Limiter {
    pub fn new(limit: RateLimit, clock: Clock) -> Limiter {
        let period_nanos = (limit.period().as_nanos() as u64).max(1);
        Limiter {
            limit,
            period_nanos,
            tolerance_nanos: period_nanos.saturating_mul(u64::from(limit.burst.max(1))),
            theoretical_arrival: AtomicU64::new(0),
            clock,
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    fn now_nanos(&self) -> u64 {
        self.clock.elapsed().as_nanos() as u64
    }

    /// Takes one request's allowance and says what is left, or says how
    /// long to wait (taking nothing).
    pub fn check(&self) -> Result<Allowance, OverLimit> {
        let now = self.now_nanos();
        let mut tat = self.theoretical_arrival.load(Ordering::Acquire);
        loop {
            let next = tat.max(now) + self.period_nanos;
            let ahead = next - now;
            if ahead > self.tolerance_nanos {
                let wait = Duration::from_nanos(ahead - self.tolerance_nanos);
                let window = Duration::from_nanos(self.tolerance_nanos);
                return Err(OverLimit {
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                    limit: self.limit.burst,
                    window_secs: window.as_secs_f64().ceil().max(1.0) as u64,
                });
            }
            match self.theoretical_arrival.compare_exchange_weak(
                tat,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    let remaining = (self.tolerance_nanos - ahead) / self.period_nanos;
                    return Ok(Allowance {
                        limit: self.limit.burst,
                        remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                        reset_secs: Duration::from_nanos(ahead).as_secs_f64().ceil() as u64,
                    });
                }
                Err(current) => tat = current,
            }
        }
    }

    /// Gives back the allowance one successful [`check`](Self::check)
    /// took, for a request that was not accepted after all (a replay found
    /// when its nonce was recorded). A TAT already in the past means the
    /// allowance is full: nothing to give back there.
    pub fn give_back(&self) {
        let _ = self
            .theoretical_arrival
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.saturating_sub(self.period_nanos))
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<RateLimit, String> {
        RateLimit::parse(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn limits_are_validated() {
        assert_eq!(
            parse(r#"{"per_second": 50, "burst": 100}"#).unwrap(),
            RateLimit {
                per_second: 50.0,
                burst: 100
            }
        );
        assert_eq!(parse(r#"{"per_second": 2.5}"#).unwrap().burst, 3);
        assert_eq!(parse(r#"{"per_second": 0.1}"#).unwrap().burst, 1);
        for bad in [
            r#"{}"#,
            r#"{"per_second": 0}"#,
            r#"{"per_second": -1}"#,
            r#"{"per_second": 1e12}"#,
            r#"{"per_second": 1e-300}"#,
            r#"{"per_second": 5, "burst": 0}"#,
            r#"{"per_second": 5, "burst": 1.5}"#,
            r#"{"per_second": 5, "burst": 1e9}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_burst_passes_then_the_next_request_waits() {
        let limiter = Limiter::new(
            RateLimit {
                per_second: 1.0,
                burst: 3,
            },
            Clock::manual(0),
        );
        let remaining: Vec<u32> = (0..3).map(|_| limiter.check().unwrap().remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
        let over = limiter.check().unwrap_err();
        assert_eq!(over.retry_after_secs, 1);
        assert_eq!(over.limit, 3);
        assert_eq!(over.window_secs, 3);
    }

    #[test]
    fn an_allowance_given_back_can_be_taken_again() {
        let clock = Clock::manual(0);
        let limiter = Limiter::new(
            RateLimit {
                per_second: 0.01,
                burst: 2,
            },
            clock.clone(),
        );
        for _ in 0..100 {
            assert_eq!(limiter.check().unwrap().remaining, 1);
            limiter.give_back();
        }
        assert_eq!(limiter.check().unwrap().remaining, 1);
        assert_eq!(limiter.check().unwrap().remaining, 0);
        assert!(limiter.check().is_err());
        limiter.give_back();
        assert_eq!(limiter.check().unwrap().remaining, 0);
        // Giving back more than was taken never makes room beyond the burst.
        for _ in 0..10 {
            limiter.give_back();
        }
        assert_eq!(limiter.check().unwrap().remaining, 1);
        // And time refills it: 100 s a request at 0.01 a second.
        assert_eq!(limiter.check().unwrap().remaining, 0);
        assert_eq!(limiter.check().unwrap_err().retry_after_secs, 100);
        clock.advance(Duration::from_secs(100));
        assert_eq!(limiter.check().unwrap().remaining, 0);
    }
}
