//! The replay window's group-commit writer, the same on every backend: one
//! writer thread owns the ledger's connection and records (key_id, nonce)
//! pairs in shared transactions.
//!
//! Why one thread and shared commits: a commit is the expensive part (an
//! fsync on SQLite, a round trip and a WAL flush on PostgreSQL). Requests
//! queue their pair with a reply channel; the writer takes everything
//! queued (up to `MAX_BATCH`), and while commits are small and slow
//! waits briefly for as many as the last one carried
//! ([`Writer::wait_for_company`]), hands
//! the batch to the [`NonceLedger`] as one transaction and answers each
//! request only after the commit. A request is therefore never accepted
//! before its nonce is durable.
//!
//! Pairs already in the in-memory front ([`SeenNonces`]) are refused by
//! the request itself, without queueing; two copies of one pair inside a
//! batch are told apart here, before the ledger sees them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nohash_hasher::IntSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tokio::sync::{mpsc, oneshot};

use super::backend::{NonceLedger, PairOutcome, PairToRecord};
use super::retried_failure::RetriedFailure;
use super::seen_nonces::{PairHasher, SeenNonces};
use crate::clock;
use crate::error::Error;

/// Most pairs recorded in one transaction: large enough to share commits
/// under load, small enough that one transaction holds the lock briefly.
const MAX_BATCH: usize = 1024;
/// Requests that may wait for the writer; beyond it they wait up to
/// `QUEUE_WAIT`, then are refused with 503 rather than queued without bound.
const QUEUE_CAPACITY: usize = 8192;
/// How long the writer's housekeeping (last-used times, the purge) may
/// wait for the database: it is retried next time, and requests queued
/// behind it must not wait for it.
const HOUSEKEEPING_WAIT: Duration = Duration::from_millis(100);
/// The longest a batch waits for requests to join it
/// (`Writer::wait_for_company`), however slow the last commit was: a
/// commit that took seconds (a database going down) says nothing about
/// when the next requests come.
const MAX_WAIT_FOR_COMPANY: Duration = Duration::from_micros(300);
/// How often a waiting batch looks for new requests. Linux adds its timer
/// slack (50 µs) to each sleep.
const COMPANY_POLL: Duration = Duration::from_micros(20);
/// Commits carrying this many requests or fewer, typically, are small
/// enough that waiting for company pays (`Writer::wait_for_company`).
const FEW_REQUESTS: f64 = 8.0;

type Reply = oneshot::Sender<Result<(), Error>>;

enum Job {
    Record(PairToRecord, Reply),
    Purge {
        now: i64,
    },
    TouchKeys {
        used: Vec<(Arc<str>, i64)>,
        /// Told once the batch holding these is committed (or has failed).
        done: Option<oneshot::Sender<()>>,
    },
}

/// What the writer counts, for `GET /admin/metrics`. Updated once per
/// commit, never per request, so counting costs the hot path nothing.
#[derive(Clone)]
pub struct WriterMetrics {
    pub commits: Counter,
    /// Transactions that could not commit; their requests got 503.
    pub failed_commits: Counter,
    pub pairs_recorded: Counter,
    /// How long a transaction took, BEGIN to COMMIT, busy retries included:
    /// what every signed request in it waited for.
    pub commit_seconds: Histogram,
    /// Requests per commit (those refused inside it included): how well
    /// commits are shared.
    pub requests_per_commit: Histogram,
}

impl Default for WriterMetrics {
    fn default() -> Self {
        WriterMetrics {
            commits: Counter::default(),
            failed_commits: Counter::default(),
            pairs_recorded: Counter::default(),
            // A commit takes tens of µs, one with an fsync or a round trip
            // a few hundred, one waiting for another process's lock up to
            // the busy timeout.
            commit_seconds: Histogram::new([
                25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3,
                100e-3, 250e-3, 500e-3, 1.0, 2.5,
            ]),
            // 1 to 1024 (MAX_BATCH).
            requests_per_commit: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
        }
    }
}

pub struct NonceWindow {
    jobs: mpsc::Sender<Job>,
    /// How long a request waits for its pair to be recorded, all told:
    /// for room in the queue, in the queue, and for the database.
    busy_timeout: Duration,
    /// Shared with the writer (and, on SQLite, the ledger), which alone add
    /// to it. Requests only look.
    seen: Arc<SeenNonces>,
    hasher: PairHasher,
    metrics: WriterMetrics,
}

impl NonceWindow {
    /// Starts one writer thread per ledger, all taking batches from one
    /// queue, so that with several ledger connections a batch can be sent
    /// while earlier ones wait for their commits. SQLite gets one (its
    /// writers would only queue on the file's write lock); PostgreSQL gets
    /// `KEYGATE_PG_NONCE_CONNECTIONS` (see `postgres::ledger_connections`:
    /// one was best on a single machine, more can help across a network).
    /// Concurrent batches are safe there because the database's unique
    /// index decides. A ledger must share `seen` if it uses it at all.
    pub(crate) fn start(
        ledgers: Vec<Box<dyn NonceLedger>>,
        seen: Arc<SeenNonces>,
        busy_timeout: Duration,
    ) -> NonceWindow {
        #[cfg(feature = "bench-decomposition")]
        decomposition::mode(); // warns now, not at the first request
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let queue = Arc::new(Mutex::new(queue));
        let hasher = seen.hasher.clone();
        let metrics = WriterMetrics::default();
        for (number, ledger) in ledgers.into_iter().enumerate() {
            let writer = Writer {
                ledger,
                housekeeping_wait: HOUSEKEEPING_WAIT.min(busy_timeout),
                seen: seen.clone(),
                metrics: metrics.clone(),
                record_failures: RetriedFailure::new(
                    "recording nonces (requests refused with 503)",
                ),
                touch_failures: RetriedFailure::new("writing last-used times"),
                purge_failures: RetriedFailure::new("purging expired nonces"),
                recent: RecentCommits::default(),
            };
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("keygate-nonce-writer-{number}"))
                .spawn(move || writer.run(&queue))
                .expect("spawn nonce writer thread");
        }
        NonceWindow {
            jobs,
            busy_timeout,
            seen,
            hasher,
            metrics,
        }
    }

    pub fn metrics(&self) -> &WriterMetrics {
        &self.metrics
    }

    /// Pairs in the window now.
    pub fn pairs(&self) -> usize {
        self.seen.len()
    }

    /// Requests (and housekeeping jobs) waiting for the writer now.
    pub fn queued(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    /// Resolves once the pair is committed (`Ok`), or with the reason it
    /// was not: `NonceReused`, `KeyRevoked`, `KeyExpired`, `UnknownKey`,
    /// `PolicyChanged` (checked against an older policy than the stored
    /// one: check again) or `Unavailable`.
    pub async fn record(
        &self,
        key_id: Arc<str>,
        nonce: &str,
        expires_at: i64,
        policy_seq: i64,
    ) -> Result<(), Error> {
        let hash = self.hasher.hash(&key_id, nonce);
        #[cfg(feature = "bench-decomposition")]
        if decomposition::mode() == decomposition::Mode::MemoryOnly {
            return decomposition::record_in_memory(&self.seen, hash, expires_at);
        }
        // A pair in the set was accepted before: a replay, refused without
        // a commit. A pair not in it may still have been recorded by
        // another process; the ledger decides that inside its transaction.
        if self.seen.contains(hash) {
            return Err(Error::NonceReused);
        }
        let (reply, answer) = oneshot::channel();
        let deadline = Instant::now() + self.busy_timeout;
        let pair = PairToRecord {
            key_id,
            nonce: nonce.into(),
            expires_at,
            hash,
            deadline,
            policy_seq,
        };
        // The queue almost always has room; only a full one needs the timer.
        let job = match self.jobs.try_send(Job::Record(pair, reply)) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(job)) => Some(job),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(Error::Unavailable("nonce writer stopped".into()))
            }
        };
        if let Some(job) = job {
            // Boxed: the timer would otherwise sit in every request's future.
            let room = deadline.saturating_duration_since(Instant::now());
            let wait = Box::pin(self.jobs.send_timeout(job, room));
            wait.await.map_err(|e| {
                Error::Unavailable(match e {
                    mpsc::error::SendTimeoutError::Timeout(_) => "nonce writer queue full".into(),
                    mpsc::error::SendTimeoutError::Closed(_) => "nonce writer stopped".into(),
                })
            })?;
        }
        answer
            .await
            .unwrap_or_else(|_| Err(Error::Unavailable("nonce writer stopped".into())))
    }

    pub(crate) fn purge_expired(&self, now: i64) {
        // try_send: housekeeping must never wait behind a full queue; the
        // next tick purges instead.
        let _ = self.jobs.try_send(Job::Purge { now });
    }

    pub(crate) fn touch_keys(&self, used: Vec<(Arc<str>, i64)>) {
        let _ = self.jobs.try_send(Job::TouchKeys { used, done: None });
    }

    /// Like `touch_keys`, but waits for the commit: for shutting down.
    pub(crate) async fn touch_keys_and_wait(&self, used: Vec<(Arc<str>, i64)>) {
        let (done, committed) = oneshot::channel();
        let job = Job::TouchKeys {
            used,
            done: Some(done),
        };
        if self.jobs.send(job).await.is_ok() {
            let _ = committed.await;
        }
    }
}

impl From<PairOutcome> for Result<(), Error> {
    fn from(outcome: PairOutcome) -> Self {
        match outcome {
            PairOutcome::Recorded => Ok(()),
            PairOutcome::Replayed => Err(Error::NonceReused),
            PairOutcome::UnknownKey => Err(Error::UnknownKey),
            PairOutcome::KeyRevoked => Err(Error::KeyRevoked),
            PairOutcome::KeyExpired => Err(Error::KeyExpired),
            PairOutcome::PolicyChanged => Err(Error::PolicyChanged),
        }
    }
}

struct Writer {
    ledger: Box<dyn NonceLedger>,
    housekeeping_wait: Duration,
    seen: Arc<SeenNonces>,
    metrics: WriterMetrics,
    /// A ledger that cannot record fails every batch while the fault lasts
    /// (a full disk, a database that is down): one log line per batch
    /// would let any client fill the operator's disk.
    record_failures: RetriedFailure,
    touch_failures: RetriedFailure,
    purge_failures: RetriedFailure,
    recent: RecentCommits,
}

/// Moves every queued job into `batch`, up to `MAX_BATCH`, without waiting.
fn take_queued(queue: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// What the writer remembers of its recent commits, to size the next one.
#[derive(Default)]
struct RecentCommits {
    /// Requests the last commit carried.
    last_requests: usize,
    /// How long the last commit took.
    last_duration: Duration,
    /// Requests a commit, a moving average over about the last 8 commits.
    typical_requests: f64,
}

impl RecentCommits {
    fn record(&mut self, requests: usize, duration: Duration) {
        self.last_requests = requests;
        self.last_duration = duration;
        self.typical_requests += (requests as f64 - self.typical_requests) / 8.0;
    }

    /// Whether a batch of `batch` jobs that has waited `waited` for more
    /// should wait another poll: while commits are small, this batch is
    /// smaller than the last one, and the wait stays within half of what
    /// the last commit took (and `MAX_WAIT_FOR_COMPANY`).
    fn worth_waiting(&self, batch: usize, waited: Duration) -> bool {
        let patience = (self.last_duration / 2).min(MAX_WAIT_FOR_COMPANY);
        self.typical_requests <= FEW_REQUESTS
            && batch < self.last_requests
            && waited + COMPANY_POLL <= patience
    }
}

impl Writer {
    fn run(mut self, queue: &Mutex<mpsc::Receiver<Job>>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            {
                // Held while this writer waits for work and takes a batch;
                // any other writers are meanwhile committing theirs.
                let mut queue = queue.lock().unwrap_or_else(|p| p.into_inner());
                let Some(first) = queue.blocking_recv() else {
                    return;
                };
                batch.push(first);
                take_queued(&mut queue, &mut batch);
                self.wait_for_company(&mut queue, &mut batch);
            }
            self.process(&mut batch);
        }
    }

    /// Group commit: whatever queued while the last commit ran shares the
    /// next one. While commits are small, a batch smaller than the last
    /// one also waits a little for the rest of the clients.
    ///
    /// Why: with few connections, a commit's time is mostly its flush
    /// (on PostgreSQL a round trip and a WAL fsync, on SQLite with
    /// `full` durability an fsync), and the clients split into two
    /// halves that take turns: one half's requests queue while the
    /// other half's commit runs. Waiting for the second half puts both
    /// in one commit, halving the flushes: two instances on PostgreSQL
    /// with 2 and 8 connections each carried 20 to 38% more, at a
    /// quarter lower median latency (BENCHMARKS.md, round 11).
    ///
    /// Why only while commits are small: with many requests a commit,
    /// the two halves are a pipeline that keeps the CPU busy (one
    /// half's requests are parsed and verified while the other half
    /// commits), and merging them idles it: one instance at 64
    /// connections carried 6 to 21% less when the wait applied at every
    /// size. A fixed wait for every batch (200 µs, round 3) cost SQLite
    /// throughput, because its commit without an fsync takes ~15 µs: so
    /// the wait is also bounded by half the last commit's duration, and
    /// a lone client (a last commit of one request) never waits.
    fn wait_for_company(&self, queue: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
        let started = Instant::now();
        // Sleeps in short steps, looking at the queue after each: a plain
        // thread cannot block on tokio's queue with a timeout.
        while self.recent.worth_waiting(batch.len(), started.elapsed()) {
            std::thread::sleep(COMPANY_POLL);
            take_queued(queue, batch);
        }
    }

    fn process(&mut self, batch: &mut Vec<Job>) {
        let mut pairs = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        let mut purge_at = None;
        let mut touches = Vec::new();
        let mut touches_done = Vec::new();
        for job in batch.drain(..) {
            match job {
                Job::Record(pair, reply) => {
                    pairs.push(pair);
                    replies.push(reply);
                }
                Job::Purge { now } => purge_at = Some(now),
                Job::TouchKeys { used, done } => {
                    touches.extend(used);
                    touches_done.extend(done);
                }
            }
        }

        #[cfg(feature = "bench-decomposition")]
        if decomposition::mode() == decomposition::Mode::WriterThreadOnly {
            for (pair, reply) in pairs.drain(..).zip(replies.drain(..)) {
                let outcome =
                    decomposition::record_in_memory(&self.seen, pair.hash, pair.expires_at);
                let _ = reply.send(outcome);
            }
        }
        if !pairs.is_empty() {
            self.record(pairs, replies);
        }
        if !touches.is_empty() {
            let touched = self
                .ledger
                .touch_keys(&touches, Instant::now() + self.housekeeping_wait);
            self.touch_failures.record(Instant::now(), touched);
        }
        for done in touches_done {
            let _ = done.send(());
        }
        if let Some(now) = purge_at {
            self.seen.purge(now);
            let purged = self
                .ledger
                .purge(now, Instant::now() + self.housekeeping_wait);
            self.purge_failures.record(Instant::now(), purged);
        }
    }

    fn record(&mut self, pairs: Vec<PairToRecord>, replies: Vec<Reply>) {
        // Copies of one pair in this batch, and pairs recorded by a batch
        // that committed after the request looked: refused here, so the
        // ledger sees each pair once.
        let mut in_batch = IntSet::default();
        let mut outcomes: Vec<Option<Result<(), Error>>> = Vec::with_capacity(pairs.len());
        let mut fresh = Vec::with_capacity(pairs.len());
        let started = Instant::now();
        for pair in &pairs {
            if self.seen.contains(pair.hash) || !in_batch.insert(pair.hash) {
                outcomes.push(Some(Err(Error::NonceReused)));
            } else if pair.deadline <= started {
                // It waited out the database timeout behind earlier
                // batches: refused now rather than made to wait again.
                outcomes.push(Some(Err(Error::Unavailable(
                    "waited past the database timeout for the nonce writer".into(),
                ))));
            } else {
                outcomes.push(None);
                fresh.push(pair.clone());
            }
        }
        // The batch gives up when its most impatient request would.
        let deadline = fresh.iter().map(|p| p.deadline).min();
        let recorded = match deadline {
            None => Ok(Vec::new()),
            Some(deadline) => self.ledger.record(&fresh, clock::now(), deadline),
        };
        let took = started.elapsed();
        self.recent.record(pairs.len(), took);
        self.metrics.commit_seconds.observe(took.as_secs_f64());
        self.metrics.requests_per_commit.observe(pairs.len() as f64);
        match recorded {
            Ok(fresh_outcomes) => {
                self.metrics.commits.inc();
                self.record_failures
                    .record(Instant::now(), Ok::<(), String>(()));
                let mut fresh_outcomes = fresh_outcomes.into_iter();
                for (pair, outcome) in pairs.iter().zip(outcomes.iter_mut()) {
                    if outcome.is_none() {
                        let decided = fresh_outcomes.next().unwrap_or(PairOutcome::Replayed);
                        match decided {
                            PairOutcome::Recorded => {
                                self.seen.insert(pair.hash, pair.expires_at);
                                self.metrics.pairs_recorded.inc();
                            }
                            // Recorded by another process: remembered here
                            // too, so its next copies are refused without
                            // a round trip.
                            PairOutcome::Replayed => {
                                self.seen.insert(pair.hash, pair.expires_at);
                            }
                            _ => {}
                        }
                        *outcome = Some(decided.into());
                    }
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome.unwrap_or(Err(Error::NonceReused)));
                }
            }
            Err(e) => {
                self.metrics.failed_commits.inc();
                let reason = e.to_string();
                self.record_failures.record(Instant::now(), Err(&reason));
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let answer = outcome.unwrap_or_else(|| Err(Error::Unavailable(reason.clone())));
                    let _ = reply.send(answer);
                }
            }
        }
    }
}

/// Benchmark-only ways to record a pair without part of the machinery, to
/// measure what each part of a signed request costs (benches/wrk/run.sh,
/// `NONCE_MODES`). They accept pairs that are not durable, so they exist
/// only in builds with the `bench-decomposition` feature, never in a normal
/// build, and the server warns at start-up when one is on.
#[cfg(feature = "bench-decomposition")]
mod decomposition {
    use super::{Error, SeenNonces};

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub(super) enum Mode {
        /// The real thing (the default).
        Durable,
        /// Through the writer thread and back, without the database.
        WriterThreadOnly,
        /// Checked and remembered by the request itself: no writer thread,
        /// no database.
        MemoryOnly,
    }

    /// From `KEYGATE_BENCH_NONCE_MODE` (`durable`, `writer-thread-only`,
    /// `memory-only`), read once.
    pub(super) fn mode() -> Mode {
        static MODE: std::sync::OnceLock<Mode> = std::sync::OnceLock::new();
        *MODE.get_or_init(|| {
            let mode = match std::env::var("KEYGATE_BENCH_NONCE_MODE").as_deref() {
                Ok("writer-thread-only") => Mode::WriterThreadOnly,
                Ok("memory-only") => Mode::MemoryOnly,
                Ok("durable") | Err(_) => Mode::Durable,
                // A typo must not pass for a measurement of another mode.
                Ok(other) => panic!(
                    "KEYGATE_BENCH_NONCE_MODE={other}: expected durable, writer-thread-only or memory-only"
                ),
            };
            if mode != Mode::Durable {
                tracing::warn!(?mode, "benchmark build: nonces are NOT recorded durably");
            }
            mode
        })
    }

    pub(super) fn record_in_memory(
        seen: &SeenNonces,
        hash: u64,
        expires_at: i64,
    ) -> Result<(), Error> {
        if seen.insert(hash, expires_at) {
            Ok(())
        } else {
            Err(Error::NonceReused)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits as the writer would have seen them: `requests` each, each
    /// taking `micros`.
    fn after(commits: &[(usize, u64)]) -> RecentCommits {
        let mut recent = RecentCommits::default();
        for &(requests, micros) in commits {
            recent.record(requests, Duration::from_micros(micros));
        }
        recent
    }

    #[test]
    fn a_lone_client_never_waits() {
        assert!(!after(&[(1, 5_000)]).worth_waiting(1, Duration::ZERO));
        assert!(!RecentCommits::default().worth_waiting(1, Duration::ZERO));
    }

    #[test]
    fn a_smaller_batch_waits_for_half_a_slow_commit() {
        let postgres = after(&[(4, 400); 20]);
        assert!(postgres.worth_waiting(2, Duration::ZERO));
        assert!(postgres.worth_waiting(3, Duration::from_micros(180)));
        assert!(!postgres.worth_waiting(2, Duration::from_micros(190)));
        assert!(!postgres.worth_waiting(4, Duration::ZERO));
        assert!(!postgres.worth_waiting(5, Duration::ZERO));
    }

    #[test]
    fn large_commits_never_wait() {
        let busy = after(&[(30, 800); 20]);
        assert!(!busy.worth_waiting(15, Duration::ZERO));
        // One small commit among large ones does not start the waiting.
        let mut recent = after(&[(30, 800); 20]);
        recent.record(6, Duration::from_micros(800));
        assert!(!recent.worth_waiting(3, Duration::ZERO));
    }

    #[test]
    fn a_commit_cheaper_than_a_poll_never_waits() {
        // SQLite's commit without an fsync takes ~15 µs.
        assert!(!after(&[(4, 15); 20]).worth_waiting(1, Duration::ZERO));
    }

    #[test]
    fn the_wait_is_capped_however_slow_the_last_commit() {
        // A commit that took seconds: a database going down.
        let stalled = after(&[(4, 400), (4, 5_000_000)]);
        assert!(stalled.worth_waiting(1, Duration::from_micros(250)));
        assert!(!stalled.worth_waiting(1, Duration::from_micros(290)));
    }
}
