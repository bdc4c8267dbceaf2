//! The log for work that fails again and again while a fault lasts (a full
//! disk, a locked file, a database that is down): the first failure at
//! once, then at most one line a minute saying how many were not logged,
//! and one line when it clears. Anything retried per tick or per batch
//! would otherwise write a line each time, at a rate a client can drive.
//!
//! A fault clears only once the work has succeeded for `RECOVERED_AFTER`:
//! a nearly full disk lets a batch through after each checkpoint frees a
//! little room, and logging every such "recovery" and the failure after it
//! wrote ten lines a second (tests/api/faults.rs).

use std::time::{Duration, Instant};

pub(crate) struct RetriedFailure {
    task: &'static str,
    failing: Option<Failing>,
}

struct Failing {
    since: Instant,
    last_logged: Instant,
    unlogged: u64,
    /// Succeeding since then, not yet long enough to call it recovered.
    succeeding_since: Option<Instant>,
}

const REPEAT_FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);
pub(crate) const RECOVERED_AFTER: Duration = Duration::from_secs(2);

impl RetriedFailure {
    pub(crate) fn new(task: &'static str) -> Self {
        RetriedFailure {
            task,
            failing: None,
        }
    }

    /// From the first failure until the recovery is logged.
    pub(crate) fn is_failing(&self) -> bool {
        self.failing.is_some()
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
                let succeeding_since = *failing.succeeding_since.get_or_insert(now);
                if now.duration_since(succeeding_since) < RECOVERED_AFTER {
                    return false;
                }
                let for_secs = succeeding_since.duration_since(failing.since).as_secs();
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
                    succeeding_since: None,
                });
                true
            }
            (Err(e), Some(failing)) => {
                failing.succeeding_since = None;
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
            !log.record(at(120_400), Ok::<(), &str>(())),
            "one success is not yet a recovery"
        );
        assert!(!log.record(at(121_400), Ok::<(), &str>(())));
        assert!(
            log.record(at(122_400), Ok::<(), &str>(())),
            "the recovery is logged once it has lasted"
        );
        assert!(!log.record(at(122_600), Ok::<(), &str>(())));
        assert!(
            log.record(at(122_800), failed),
            "a new failure is logged at once"
        );
    }

    /// A fault that lets every other attempt through (a nearly full disk)
    /// is one fault: a line at its start, one a minute, one at its end.
    #[test]
    fn a_flapping_failure_is_one_failure() {
        let mut log = RetriedFailure::new("test");
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let logged = (0..1200u64)
            .filter(|tick| {
                let outcome = if tick % 2 == 0 {
                    Err("disk full")
                } else {
                    Ok(())
                };
                log.record(at(tick * 100), outcome)
            })
            .count();
        assert_eq!(logged, 2, "the first failure and one line a minute");
        let recovered = (1200..1240u64)
            .filter(|tick| log.record(at(tick * 100), Ok::<(), &str>(())))
            .count();
        assert_eq!(recovered, 1);
    }
}
