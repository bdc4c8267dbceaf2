//! The log for work that fails again and again while a fault lasts (a full
//! disk, a locked file, a database that is down): the first failure at
//! once, then at most one line a minute saying how many were not logged,
//! and one line when it clears. Anything retried per tick or per batch
//! would otherwise write a line each time, at a rate a client can drive.

use std::time::{Duration, Instant};

pub(crate) struct RetriedFailure {
    task: &'static str,
    failing: Option<Failing>,
}

struct Failing {
    since: Instant,
    last_logged: Instant,
    unlogged: u64,
}

const REPEAT_FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);

impl RetriedFailure {
    pub(crate) fn new(task: &'static str) -> Self {
        RetriedFailure {
            task,
            failing: None,
        }
    }

    /// Returns whether it logged, for the tests.
    pub(crate) fn record<E: std::fmt::Display>(
        &mut self,
        now: Instant,
        result: Result<(), E>,
    ) -> bool {
        let task = self.task;
        match (result, &mut self.failing) {
            (Ok(()), None) => false,
            (Ok(()), Some(failing)) => {
                let for_secs = now.duration_since(failing.since).as_secs();
                let failures_not_logged = failing.unlogged;
                tracing::info!(task, for_secs, failures_not_logged, "recovered");
                self.failing = None;
                true
            }
            (Err(e), None) => {
                tracing::warn!(task, error = %e, "failed; retrying (further failures are logged once a minute)");
                self.failing = Some(Failing {
                    since: now,
                    last_logged: now,
                    unlogged: 0,
                });
                true
            }
            (Err(e), Some(failing)) => {
                if now.duration_since(failing.last_logged) < REPEAT_FAILURE_LOG_EVERY {
                    failing.unlogged += 1;
                    return false;
                }
                let for_secs = now.duration_since(failing.since).as_secs();
                let failures_since_last_line = failing.unlogged + 1;
                tracing::warn!(task, error = %e, for_secs, failures_since_last_line, "still failing");
                failing.last_logged = now;
                failing.unlogged = 0;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lasting_failure_is_logged_once_a_minute_and_its_end_once() {
        let mut log = RetriedFailure::new("test");
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let failed: Result<(), &str> = Err("disk full");
        assert!(!log.record(at(0), Ok::<(), &str>(())));
        assert!(log.record(at(0), failed));
        let logged = (1..=600)
            .filter(|tick| log.record(at(tick * 200), failed))
            .count();
        assert_eq!(logged, 2, "two minutes of ticks, one line a minute");
        assert!(
            log.record(at(120_400), Ok::<(), &str>(())),
            "the recovery is logged"
        );
        assert!(!log.record(at(120_600), Ok::<(), &str>(())));
        assert!(
            log.record(at(120_800), failed),
            "a new failure is logged at once"
        );
    }
}
