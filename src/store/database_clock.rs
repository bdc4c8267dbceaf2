//! How far this instance's clock is from the shared database's, and the
//! guard that keeps exactly-once independent of it (CONTRACT.md section 7).
//!
//! On PostgreSQL, instances on several machines share one replay window.
//! Pairs are purged by the database's clock with a margin of the skew
//! (`postgres/purge.rs`), which is safe only while no instance's clock is
//! further than the skew from the database's: such an instance could
//! accept a timestamp whose pair the database has already let go. So each
//! instance measures its offset at start and every few seconds, exports
//! it (`keygate_database_clock_offset_seconds`), warns past
//! [`WARN_OFFSET_SECS`], and refuses signed requests with 503
//! `unavailable` while the offset is beyond the skew. On SQLite every
//! process shares one machine's clock, and there is nothing to measure.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::backend::CatalogBackend;
use super::StoreError;

/// Past this, an operator should look at NTP: healthy clocks agree to
/// milliseconds, and the margin the purge keeps is sized on the skew.
pub const WARN_OFFSET_SECS: f64 = 1.0;
/// How often a clock that is off is logged about.
const LOG_EVERY: Duration = Duration::from_secs(60);
/// No measurement yet (or SQLite).
const UNMEASURED: i64 = i64::MIN;

pub struct DatabaseClock {
    skew_secs: u32,
    /// Database clock minus this instance's, in milliseconds.
    offset_millis: AtomicI64,
    last_logged: Mutex<Option<Instant>>,
}

impl DatabaseClock {
    pub fn new(skew_secs: u32) -> Self {
        DatabaseClock {
            skew_secs,
            offset_millis: AtomicI64::new(UNMEASURED),
            last_logged: Mutex::new(None),
        }
    }

    /// Reads the database's clock once and keeps the offset, taken
    /// against the middle of the round trip. A failed reading keeps the
    /// last offset: a database that does not answer refuses requests on
    /// its own.
    pub fn measure(&self, backend: &dyn CatalogBackend) -> Result<(), StoreError> {
        let before = unix_seconds();
        let Some(database) = backend.database_time()? else {
            return Ok(());
        };
        let after = unix_seconds();
        let offset = database - (before + after) / 2.0;
        self.offset_millis
            .store((offset * 1000.0).round() as i64, Ordering::Relaxed);
        self.log(offset);
        Ok(())
    }

    /// Database clock minus this instance's, in seconds, once measured.
    pub fn offset_secs(&self) -> Option<f64> {
        match self.offset_millis.load(Ordering::Relaxed) {
            UNMEASURED => None,
            millis => Some(millis as f64 / 1000.0),
        }
    }

    /// Why signed requests must be refused now, if they must.
    pub fn refusal(&self) -> Option<String> {
        let offset = self.offset_secs()?;
        (offset.abs() > f64::from(self.skew_secs)).then(|| {
            format!(
                "this instance's clock is {:.1} s from the database's, more than the allowed \
                 skew of {} s: signed requests are refused until it is corrected (NTP)",
                -offset, self.skew_secs
            )
        })
    }

    fn log(&self, offset: f64) {
        if offset.abs() <= WARN_OFFSET_SECS {
            *lock(&self.last_logged) = None;
            return;
        }
        let mut last = lock(&self.last_logged);
        if last.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        match self.refusal() {
            Some(reason) => tracing::error!(offset_secs = offset, "{reason}"),
            None => tracing::warn!(
                offset_secs = offset,
                skew_secs = self.skew_secs,
                "this instance's clock is {:.1} s from the database's; past the skew it will \
                 refuse signed requests (check NTP)",
                -offset
            ),
        }
    }
}

fn unix_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_beyond_the_skew_refuses() {
        let clock = DatabaseClock::new(5);
        assert_eq!(clock.refusal(), None, "unmeasured: nothing to refuse on");
        for (millis, refused) in [
            (0, false),
            (4_900, false),
            (-5_000, false),
            (5_001, true),
            (-20_000, true),
        ] {
            clock.offset_millis.store(millis, Ordering::Relaxed);
            assert_eq!(clock.refusal().is_some(), refused, "{millis} ms");
        }
    }
}
