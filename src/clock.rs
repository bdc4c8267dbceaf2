//! The one clock keygate reads, made once when the application is built
//! and handed to everything that asks what time it is: the store and its
//! catalog, the key cache, the nonce writer, the rate limiters, the
//! signed-request path and the metrics.
//!
//! Two readings: [`Clock::now`], Unix seconds, as timestamps are signed;
//! and [`Clock::elapsed`], a monotonic duration since the clock was made,
//! which the rate limiters count in (a wall clock stepped back must not
//! refill anyone's allowance).
//!
//! A [`Clock::manual`] clock moves only when told ([`Clock::advance`], as
//! mini-redis's tests `time::advance()`), so tests of skew edges, expiry,
//! rotation grace, rate-limit refill and the purge run in milliseconds
//! instead of sleeping.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone)]
pub struct Clock(Arc<Source>);

enum Source {
    System {
        started: Instant,
    },
    Manual {
        /// Unix time in nanoseconds.
        now_nanos: AtomicI64,
        started_nanos: i64,
    },
}

impl Clock {
    /// The machine's clocks.
    pub fn system() -> Clock {
        Clock(Arc::new(Source::System {
            started: Instant::now(),
        }))
    }

    /// A clock that stands at `unix_seconds` until [`advance`](Self::advance)d.
    pub fn manual(unix_seconds: i64) -> Clock {
        let nanos = unix_seconds.saturating_mul(1_000_000_000);
        Clock(Arc::new(Source::Manual {
            now_nanos: AtomicI64::new(nanos),
            started_nanos: nanos,
        }))
    }

    /// Unix seconds.
    pub fn now(&self) -> i64 {
        match &*self.0 {
            Source::System { .. } => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                // A clock before 1970 is broken; 0 makes every signature
                // "out of range", failing closed, rather than panicking.
                .unwrap_or(0),
            Source::Manual { now_nanos, .. } => {
                now_nanos.load(Ordering::Acquire).div_euclid(1_000_000_000)
            }
        }
    }

    /// Monotonic time since the clock was made.
    pub fn elapsed(&self) -> Duration {
        match &*self.0 {
            Source::System { started } => started.elapsed(),
            Source::Manual {
                now_nanos,
                started_nanos,
            } => {
                let nanos = now_nanos.load(Ordering::Acquire) - started_nanos;
                Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
            }
        }
    }

    /// Moves a manual clock forward. The system clock cannot be moved:
    /// asking it to is a test's mistake, and panics.
    pub fn advance(&self, by: Duration) {
        match &*self.0 {
            Source::Manual { now_nanos, .. } => {
                let nanos = i64::try_from(by.as_nanos()).unwrap_or(i64::MAX);
                now_nanos.fetch_add(nanos, Ordering::AcqRel);
            }
            Source::System { .. } => panic!("the system clock cannot be advanced"),
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.0 {
            Source::System { .. } => f.write_str("Clock::system"),
            Source::Manual { .. } => write!(f, "Clock::manual({})", self.now()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let clock = Clock::manual(1_700_000_000);
        assert_eq!(clock.now(), 1_700_000_000);
        assert_eq!(clock.elapsed(), Duration::ZERO);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), 1_700_000_001);
        assert_eq!(clock.elapsed(), Duration::from_millis(1500));
        let shared = clock.clone();
        shared.advance(Duration::from_secs(1));
        assert_eq!(clock.now(), 1_700_000_002);
    }

    #[test]
    fn the_system_clock_reads_the_machine() {
        let clock = Clock::system();
        let machine = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((clock.now() - machine).abs() <= 1);
    }
}
