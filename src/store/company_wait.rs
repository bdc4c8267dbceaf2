//! How long a batch of nonces waits for more requests to join it before
//! the writer commits it (group commit), and the doorbell that ends the
//! wait as soon as they have come.
//!
//! Why wait at all: a commit costs the same however many requests share
//! it (on PostgreSQL a round trip, the statement's start and a WAL flush;
//! on SQLite with `full` durability an fsync). Under load the clients
//! split into groups that take turns: one group's requests queue while the
//! other's commit runs. Waiting for the rest of the clients puts them in
//! one commit, so each request carries less of the commit's fixed cost:
//! two instances on PostgreSQL with 2 and 8 connections each carried 20 to
//! 38% more, at a quarter lower median latency (BENCHMARKS.md, round 11).
//!
//! Why a doorbell rather than a timer: the writer used to sleep in 20 µs
//! steps and look at the queue after each, and so waited only while
//! commits were small (8 requests or fewer): at every size, the wake-ups
//! cost more than the merged commits saved (BENCHMARKS.md, round 11: one
//! instance at 64 connections carried 6 to 21% less; round 13: keygate
//! spent on the steps as much CPU as PostgreSQL saved). Now the writer
//! sleeps once (`park_timeout`) and the request that completes the batch
//! wakes it, so waiting costs nothing while nobody comes, and every batch
//! smaller than the last commit waits. Two instances on one PostgreSQL at
//! 64 connections then put 20 to 25 requests in a commit instead of 15,
//! and spend 13% less CPU (keygate and PostgreSQL) on each request
//! (round 13).
//!
//! Why the wait is bounded by half the last commit: a batch that waits
//! longer than its commit would take gains less than it costs its
//! requests, and a fixed wait for every batch (200 µs, round 3) cost
//! SQLite throughput. On SQLite with `normal` durability most commits
//! take tens of µs, so batches there wait little or not at all. And by
//! `MAX_WAIT`: a commit that took seconds (a database going down) says
//! nothing about when the next requests come.

use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread::Thread;
use std::time::Duration;

/// The longest a batch waits for requests to join it, however slow the
/// last commit was.
const MAX_WAIT: Duration = Duration::from_micros(300);
/// The shortest wait worth a sleep: Linux adds its timer slack (50 µs) to
/// every sleep, so a shorter one would oversleep by several times.
const SHORTEST_WAIT: Duration = Duration::from_micros(20);

/// What the writer remembers of its last commit, to size the next one.
#[derive(Default)]
pub(super) struct RecentCommits {
    /// Requests the last commit carried.
    last_requests: usize,
    /// How long the last commit took.
    last_duration: Duration,
}

impl RecentCommits {
    pub(super) fn record(&mut self, requests: usize, duration: Duration) {
        self.last_requests = requests;
        self.last_duration = duration;
    }

    /// Requests a batch of `batch` waits for: as many as the last commit
    /// carried. A lone client (a last commit of one request) never waits.
    pub(super) fn company_wanted(&self, batch: usize) -> usize {
        self.last_requests.saturating_sub(batch)
    }

    /// How much longer a batch of `batch` jobs that has waited `waited`
    /// may wait for company, if at all: while it is smaller than the last
    /// commit, within half of what that commit took and `MAX_WAIT`.
    pub(super) fn patience_left(&self, batch: usize, waited: Duration) -> Option<Duration> {
        let patience = (self.last_duration / 2).min(MAX_WAIT);
        (self.company_wanted(batch) > 0 && waited + SHORTEST_WAIT <= patience)
            .then(|| patience - waited)
    }
}

/// Rung by the request whose job completes the batch a writer waits for.
///
/// Requests look at one atomic after queueing their job, so a doorbell
/// nobody waits at costs the hot path a load and a fence.
pub(super) struct Doorbell {
    /// Jobs that, once queued, complete the waiting batch; `usize::MAX`
    /// while no writer waits.
    wanted: AtomicUsize,
    /// The writer waiting (set before `wanted`, so a request that sees a
    /// count also finds the thread to wake).
    waiter: Mutex<Option<Thread>>,
}

impl Default for Doorbell {
    fn default() -> Self {
        Doorbell {
            wanted: AtomicUsize::new(usize::MAX),
            waiter: Mutex::new(None),
        }
    }
}

impl Doorbell {
    /// Told by a request after it queued its job (`queued_now` counts the
    /// jobs queued, and is only asked while a writer waits): wakes the
    /// waiting writer if they complete its batch.
    pub(super) fn queued(&self, queued_now: impl Fn() -> usize) {
        // Orders the request's push before its look at `wanted`, as
        // `wait` orders the writer's `wanted` before its look at the
        // queue: one of the two always sees the other.
        fence(Ordering::SeqCst);
        let wanted = self.wanted.load(Ordering::Relaxed);
        if wanted != usize::MAX
            && queued_now() >= wanted
            && self.wanted.swap(usize::MAX, Ordering::AcqRel) != usize::MAX
        {
            if let Some(writer) = &*self.waiter.lock().unwrap_or_else(|p| p.into_inner()) {
                writer.unpark();
            }
        }
    }

    /// Parks the calling writer until `wanted` jobs are queued (as counted
    /// by `queued_now`) or `timeout` has passed. May return early: callers
    /// look at the queue and decide again.
    pub(super) fn wait(&self, wanted: usize, timeout: Duration, queued_now: impl Fn() -> usize) {
        *self.waiter.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::thread::current());
        self.wanted.store(wanted, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if queued_now() < wanted {
            std::thread::park_timeout(timeout);
        }
        self.wanted.store(usize::MAX, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    /// The last commit as the writer saw it: `requests`, taking `micros`.
    fn after(requests: usize, micros: u64) -> RecentCommits {
        let mut recent = RecentCommits::default();
        recent.record(requests, Duration::from_micros(micros));
        recent
    }

    #[test]
    fn a_lone_client_never_waits() {
        assert_eq!(after(1, 5_000).patience_left(1, Duration::ZERO), None);
        assert_eq!(
            RecentCommits::default().patience_left(1, Duration::ZERO),
            None
        );
    }

    #[test]
    fn a_smaller_batch_waits_for_half_a_slow_commit() {
        let postgres = after(30, 400);
        assert_eq!(postgres.company_wanted(12), 18);
        assert_eq!(
            postgres.patience_left(12, Duration::ZERO),
            Some(Duration::from_micros(200))
        );
        assert_eq!(
            postgres.patience_left(29, Duration::from_micros(180)),
            Some(Duration::from_micros(20))
        );
        assert_eq!(postgres.patience_left(2, Duration::from_micros(190)), None);
    }

    #[test]
    fn a_batch_as_large_as_the_last_commit_never_waits() {
        let postgres = after(30, 400);
        assert_eq!(postgres.patience_left(30, Duration::ZERO), None);
        assert_eq!(postgres.patience_left(31, Duration::ZERO), None);
    }

    #[test]
    fn a_commit_cheaper_than_a_sleep_never_waits() {
        // SQLite's commit without an fsync takes ~15 µs.
        assert_eq!(after(4, 15).patience_left(1, Duration::ZERO), None);
        assert_eq!(after(4, 39).patience_left(1, Duration::ZERO), None);
    }

    #[test]
    fn the_wait_is_capped_however_slow_the_last_commit() {
        // A commit that took seconds: a database going down.
        let stalled = after(4, 5_000_000);
        assert_eq!(
            stalled.patience_left(1, Duration::from_micros(250)),
            Some(Duration::from_micros(50))
        );
        assert_eq!(stalled.patience_left(1, Duration::from_micros(290)), None);
    }

    /// A writer waiting for `wanted` jobs on its own thread, with `timeout`;
    /// answers how long it waited.
    fn waiting_writer(
        bell: &Arc<Doorbell>,
        queue: &Arc<AtomicUsize>,
        wanted: usize,
        timeout: Duration,
    ) -> std::thread::JoinHandle<Duration> {
        let (bell, queue) = (bell.clone(), queue.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            // As the writer does: park again after an early return until
            // the jobs are there or the time is up.
            while queue.load(Ordering::SeqCst) < wanted && started.elapsed() < timeout {
                bell.wait(wanted, timeout - started.elapsed(), || {
                    queue.load(Ordering::SeqCst)
                });
            }
            started.elapsed()
        })
    }

    /// Queues one job, as a request does.
    fn queue_one(bell: &Doorbell, queue: &AtomicUsize) {
        queue.fetch_add(1, Ordering::SeqCst);
        bell.queued(|| queue.load(Ordering::SeqCst));
    }

    #[test]
    fn the_request_that_completes_the_batch_wakes_the_writer() {
        let (bell, queue) = (Arc::new(Doorbell::default()), Arc::new(AtomicUsize::new(0)));
        let writer = waiting_writer(&bell, &queue, 3, Duration::from_secs(30));
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(20));
            queue_one(&bell, &queue);
        }
        // Woken by the third job, not by the 30 s timeout.
        assert!(writer.join().unwrap() < Duration::from_secs(10));
        // Nobody waits any more: the bell is disarmed.
        assert_eq!(bell.wanted.load(Ordering::SeqCst), usize::MAX);
    }

    #[test]
    fn fewer_jobs_than_wanted_wait_out_the_timeout() {
        let (bell, queue) = (Arc::new(Doorbell::default()), Arc::new(AtomicUsize::new(0)));
        let writer = waiting_writer(&bell, &queue, 3, Duration::from_millis(300));
        std::thread::sleep(Duration::from_millis(20));
        queue_one(&bell, &queue);
        queue_one(&bell, &queue);
        assert!(writer.join().unwrap() >= Duration::from_millis(300));
    }

    #[test]
    fn jobs_queued_before_the_wait_end_it_at_once() {
        let (bell, queue) = (Arc::new(Doorbell::default()), Arc::new(AtomicUsize::new(0)));
        for _ in 0..3 {
            // Nobody waits yet: nothing to wake.
            queue_one(&bell, &queue);
        }
        let writer = waiting_writer(&bell, &queue, 3, Duration::from_secs(30));
        assert!(writer.join().unwrap() < Duration::from_secs(10));
    }
}
