//! The replay window's group-commit writer, the same on every backend: one
//! writer thread owns the ledger's connection and records (key_id, nonce)
//! pairs in shared transactions.
//!
//! Why one thread and shared commits: a commit is the expensive part (an
//! fsync on SQLite, a round trip and a WAL flush on PostgreSQL). Requests
//! queue their pair with a reply channel; the writer takes everything
//! queued (up to `MAX_BATCH`), and while the batch is smaller than the
//! last commit waits briefly for as many as that one carried
//! ([`Writer::wait_for_company`], [`super::company_wait`]), hands the
//! batch to the [`NonceLedger`] as one transaction and answers each
//! request only after the commit. A request is therefore never accepted
//! before its nonce is durable.
//!
//! Pairs already in the in-memory front ([`SeenNonces`]) are refused by
//! the request itself, without queueing; two copies of one pair inside a
//! batch are told apart here, before the ledger sees them.
//!
//! A request that finds itself alone (no other signed request being
//! verified, the writer idle) may commit its own pair on its own thread,
//! when the ledger allows it ([`NonceWindow::start`]'s `inline`): a batch
//! of one gains nothing from the writer, and the hand-off costs two
//! wake-ups across threads (BENCHMARKS.md, round 19). Anything else (a
//! second request, a busy writer, a lock held by another process, a
//! failing database) goes to the writer as before, so the writer alone
//! waits for the database, retries and logs.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nohash_hasher::IntSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use tokio::sync::{mpsc, oneshot};

use super::backend::{NonceLedger, PairOutcome, PairToRecord};
use super::company_wait::{Doorbell, RecentCommits};
use super::retried_failure::RetriedFailure;
use super::seen_nonces::{PairHasher, SeenNonces};
use super::StoreError;
use crate::clock::Clock;

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
/// How long after two signed requests were last verified at once a
/// request may commit its own pair (see [`NonceWindow::verifying`]).
const QUIET_BEFORE_INLINE: Duration = Duration::from_millis(100);

/// What a request is told: the pair's outcome once its batch committed,
/// or why nothing could be recorded.
type Answer = Result<PairOutcome, StoreError>;
type Reply = oneshot::Sender<Answer>;
/// A ledger's connection, used by its writer thread and, when a request
/// commits its own pair, by that request's thread: one at a time.
type SharedLedger = Arc<Mutex<Box<dyn NonceLedger>>>;

fn lock(ledger: &Mutex<Box<dyn NonceLedger>>) -> MutexGuard<'_, Box<dyn NonceLedger>> {
    ledger.lock().unwrap_or_else(|p| p.into_inner())
}

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
    /// Rung when a request's job completes the batch a writer waits for.
    doorbell: Arc<Doorbell>,
    /// Set when requests that find themselves alone commit their own pair.
    inline: Option<InlineCommits>,
    /// Signed requests being verified (see [`Self::verifying`]).
    verifying: AtomicUsize,
}

/// What a request needs to commit its own pair.
struct InlineCommits {
    ledger: SharedLedger,
    /// From the writer's first failed batch until it has logged the
    /// recovery: meanwhile everything goes to the writer, which retries,
    /// logs once, and needs batches to tell that the fault has cleared.
    writer_failing: Arc<AtomicBool>,
    /// When two signed requests were last verified at once, in
    /// milliseconds of `clock.elapsed()`; `u64::MAX`: never.
    last_overlap_ms: AtomicU64,
    clock: Clock,
}

impl InlineCommits {
    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// No two signed requests verified at once for `QUIET_BEFORE_INLINE`.
    fn quiet(&self) -> bool {
        let last = self.last_overlap_ms.load(Ordering::Relaxed);
        last == u64::MAX
            || self.elapsed_ms().saturating_sub(last) >= QUIET_BEFORE_INLINE.as_millis() as u64
    }
}

/// Counts a signed request as being verified for as long as it lives (a
/// request's future may be dropped at any await). Counts nothing where
/// requests never commit their own pair.
pub struct Verifying<'a>(Option<&'a AtomicUsize>);

impl Drop for Verifying<'_> {
    fn drop(&mut self) {
        if let Some(count) = self.0 {
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }
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
    ///
    /// `inline`: a request alone may commit its own pair on the first
    /// ledger. Only for a ledger whose commit takes tens of microseconds
    /// (SQLite with `normal` durability): a request's thread serves other
    /// connections too, and must not sit through an fsync or a round trip.
    pub(crate) fn start(
        ledgers: Vec<Box<dyn NonceLedger>>,
        seen: Arc<SeenNonces>,
        busy_timeout: Duration,
        clock: Clock,
        inline: bool,
    ) -> NonceWindow {
        #[cfg(feature = "bench-decomposition")]
        decomposition::mode(); // warns now, not at the first request
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let queue = Arc::new(Mutex::new(queue));
        let hasher = seen.hasher.clone();
        let metrics = WriterMetrics::default();
        let doorbell = Arc::new(Doorbell::default());
        let writer_failing = Arc::new(AtomicBool::new(false));
        let ledgers: Vec<SharedLedger> = ledgers
            .into_iter()
            .map(|ledger| Arc::new(Mutex::new(ledger)))
            .collect();
        let inline = match ledgers.first() {
            Some(ledger) if inline => Some(InlineCommits {
                ledger: ledger.clone(),
                writer_failing: writer_failing.clone(),
                last_overlap_ms: AtomicU64::new(u64::MAX),
                clock: clock.clone(),
            }),
            _ => None,
        };
        for (number, ledger) in ledgers.into_iter().enumerate() {
            let writer = Writer {
                ledger,
                writer_failing: writer_failing.clone(),
                housekeeping_wait: HOUSEKEEPING_WAIT.min(busy_timeout),
                seen: seen.clone(),
                metrics: metrics.clone(),
                record_failures: RetriedFailure::new(
                    "recording nonces (requests refused with 503)",
                ),
                touch_failures: RetriedFailure::new("writing last-used times"),
                purge_failures: RetriedFailure::new("purging expired nonces"),
                recent: RecentCommits::default(),
                doorbell: doorbell.clone(),
                clock: clock.clone(),
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
            doorbell,
            inline,
            verifying: AtomicUsize::new(0),
        }
    }

    pub fn metrics(&self) -> &WriterMetrics {
        &self.metrics
    }

    /// Counts a signed request from the start of its verification until
    /// the guard is dropped. A request may commit its own pair only while
    /// it is the only one counted, and only once no two requests have been
    /// counted at once for `QUIET_BEFORE_INLINE`: a partner calling one
    /// request at a time commits on its own thread, while under
    /// concurrent load (where a request alone at one instant has company
    /// the next) every pair goes to the writer. Committing whenever a
    /// request happened to be alone doubled the p99 at 4 connections
    /// (BENCHMARKS.md, round 19): a worker committing keeps the other
    /// connections it serves waiting, and works in longer bursts that the
    /// scheduler cuts short.
    ///
    /// Without inline commits (PostgreSQL, `full` durability) nothing is
    /// counted: the count would only cost every request a shared write.
    pub fn verifying(&self) -> Verifying<'_> {
        let Some(inline) = &self.inline else {
            return Verifying(None);
        };
        if self.verifying.fetch_add(1, Ordering::AcqRel) > 0 {
            // Written only when it changes: under load every request
            // overlaps, and a write a request would bounce the line
            // between the cores.
            let now = inline.elapsed_ms();
            if inline.last_overlap_ms.load(Ordering::Relaxed) != now {
                inline.last_overlap_ms.store(now, Ordering::Relaxed);
            }
        }
        Verifying(Some(&self.verifying))
    }

    /// Pairs in the window now.
    pub fn pairs(&self) -> usize {
        self.seen.len()
    }

    /// Requests (and housekeeping jobs) waiting for the writer now.
    pub fn queued(&self) -> usize {
        self.jobs.max_capacity() - self.jobs.capacity()
    }

    /// Whether this process knows the pair as recorded already: a replay,
    /// to be refused before it can spend a rate limit's allowance. `false`
    /// does not make a pair new: only [`Self::record`] decides that.
    pub fn known_replay(&self, key_id: &str, nonce: &str) -> bool {
        self.seen.contains(self.hasher.hash(key_id, nonce))
    }

    /// Resolves once the pair is committed (`Ok(Recorded)`), or with the
    /// outcome that kept it out: `Replayed`, `KeyRevoked`, `KeyExpired`,
    /// `UnknownKey`, `PolicyChanged` (checked against an older policy than
    /// the stored one: check again); `Err(Unavailable)` when it could not
    /// be recorded (fail closed).
    pub async fn record(
        &self,
        key_id: Arc<str>,
        nonce: &str,
        expires_at: i64,
        policy_seq: i64,
    ) -> Answer {
        let hash = self.hasher.hash(&key_id, nonce);
        #[cfg(feature = "bench-decomposition")]
        if decomposition::mode() == decomposition::Mode::MemoryOnly {
            return decomposition::record_in_memory(&self.seen, hash, expires_at);
        }
        // A pair in the set was accepted before: a replay, refused without
        // a commit. A pair not in it may still have been recorded by
        // another process; the ledger decides that inside its transaction.
        if self.seen.contains(hash) {
            return Ok(PairOutcome::Replayed);
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
        if let Some(answer) = self.record_alone(&pair) {
            return answer;
        }
        // The queue almost always has room; only a full one needs the timer.
        let job = match self.jobs.try_send(Job::Record(pair, reply)) {
            Ok(()) => {
                self.doorbell
                    .queued(|| self.jobs.max_capacity() - self.jobs.capacity());
                None
            }
            Err(mpsc::error::TrySendError::Full(job)) => Some(job),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(StoreError::Unavailable("nonce writer stopped".into()))
            }
        };
        if let Some(job) = job {
            // Boxed: the timer would otherwise sit in every request's future.
            let room = deadline.saturating_duration_since(Instant::now());
            let wait = Box::pin(self.jobs.send_timeout(job, room));
            wait.await.map_err(|e| {
                StoreError::Unavailable(match e {
                    mpsc::error::SendTimeoutError::Timeout(_) => "nonce writer queue full".into(),
                    mpsc::error::SendTimeoutError::Closed(_) => "nonce writer stopped".into(),
                })
            })?;
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("nonce writer stopped".into())))
    }

    /// Commits the pair of a request on this request's own thread, if the
    /// ledger allows it, the request is alone (at most itself is being
    /// verified, and none overlapped lately), the writer is idle and
    /// healthy, and the database's write lock is free at once. `None`: the
    /// writer must record it (nothing was recorded here).
    fn record_alone(&self, pair: &PairToRecord) -> Option<Answer> {
        let inline = self.inline.as_ref()?;
        #[cfg(feature = "bench-decomposition")]
        if decomposition::mode() != decomposition::Mode::Durable {
            return None;
        }
        let alone = self.verifying.load(Ordering::Acquire) <= 1 && inline.quiet();
        if !alone || self.queued() > 0 || inline.writer_failing.load(Ordering::Acquire) {
            return None;
        }
        // Taken by the writer: it has a batch, this pair joins the next.
        let mut ledger = inline.ledger.try_lock().ok()?;
        let started = Instant::now();
        // A deadline already past: one attempt, no waiting for another
        // process's lock on this thread.
        let outcomes = ledger
            .record(std::slice::from_ref(pair), inline.clock.now(), started)
            .ok()?;
        drop(ledger);
        count_commit(&self.metrics, 1, started.elapsed(), true);
        let outcome = outcomes.into_iter().next().unwrap_or(PairOutcome::Replayed);
        remember(&self.seen, &self.metrics, pair, outcome);
        Some(Ok(outcome))
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

struct Writer {
    ledger: SharedLedger,
    /// Set while batches fail (see `InlineCommits`).
    writer_failing: Arc<AtomicBool>,
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
    doorbell: Arc<Doorbell>,
    /// The `now` each batch checks key expiry against.
    clock: Clock,
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
    /// next one, and a batch smaller than the last commit waits a little
    /// for the rest of the clients (how long, and why: `company_wait`).
    fn wait_for_company(&self, queue: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
        let started = Instant::now();
        while let Some(left) = self.recent.patience_left(batch.len(), started.elapsed()) {
            let wanted = self.recent.company_wanted(batch.len());
            self.doorbell.wait(wanted, left, || queue.len());
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
            let touched =
                lock(&self.ledger).touch_keys(&touches, Instant::now() + self.housekeeping_wait);
            self.touch_failures.record(Instant::now(), touched);
        }
        for done in touches_done {
            let _ = done.send(());
        }
        if let Some(now) = purge_at {
            self.seen.purge(now);
            let purged = lock(&self.ledger).purge(now, Instant::now() + self.housekeeping_wait);
            self.purge_failures.record(Instant::now(), purged);
        }
    }

    fn record(&mut self, pairs: Vec<PairToRecord>, replies: Vec<Reply>) {
        // Copies of one pair in this batch, and pairs recorded by a batch
        // that committed after the request looked: refused here, so the
        // ledger sees each pair once.
        let mut in_batch = IntSet::default();
        let mut outcomes: Vec<Option<Answer>> = Vec::with_capacity(pairs.len());
        let mut fresh = Vec::with_capacity(pairs.len());
        let started = Instant::now();
        for pair in &pairs {
            if self.seen.contains(pair.hash) || !in_batch.insert(pair.hash) {
                outcomes.push(Some(Ok(PairOutcome::Replayed)));
            } else if pair.deadline <= started {
                // It waited out the database timeout behind earlier
                // batches: refused now rather than made to wait again.
                outcomes.push(Some(Err(StoreError::Unavailable(
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
            Some(deadline) => lock(&self.ledger).record(&fresh, self.clock.now(), deadline),
        };
        let took = started.elapsed();
        self.recent.record(pairs.len(), took);
        count_commit(&self.metrics, pairs.len(), took, recorded.is_ok());
        match recorded {
            Ok(fresh_outcomes) => {
                self.record_failures
                    .record(Instant::now(), Ok::<(), String>(()));
                let mut fresh_outcomes = fresh_outcomes.into_iter();
                for (pair, outcome) in pairs.iter().zip(outcomes.iter_mut()) {
                    if outcome.is_none() {
                        let decided = fresh_outcomes.next().unwrap_or(PairOutcome::Replayed);
                        remember(&self.seen, &self.metrics, pair, decided);
                        *outcome = Some(Ok(decided));
                    }
                }
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome.unwrap_or(Ok(PairOutcome::Replayed)));
                }
            }
            Err(e) => {
                let reason = e.to_string();
                self.record_failures.record(Instant::now(), Err(&reason));
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let answer =
                        outcome.unwrap_or_else(|| Err(StoreError::Unavailable(reason.clone())));
                    let _ = reply.send(answer);
                }
            }
        }
        self.writer_failing
            .store(self.record_failures.is_failing(), Ordering::Release);
    }
}

/// A transaction of `requests` requests that took `took`, counted.
fn count_commit(metrics: &WriterMetrics, requests: usize, took: Duration, committed: bool) {
    metrics.commit_seconds.observe(took.as_secs_f64());
    metrics.requests_per_commit.observe(requests as f64);
    if committed {
        metrics.commits.inc();
    } else {
        metrics.failed_commits.inc();
    }
}

/// What a committed transaction decided for one pair, remembered in the
/// set and counted.
fn remember(seen: &SeenNonces, metrics: &WriterMetrics, pair: &PairToRecord, outcome: PairOutcome) {
    match outcome {
        PairOutcome::Recorded => {
            seen.insert(pair.hash, pair.expires_at);
            metrics.pairs_recorded.inc();
        }
        // Recorded by another process: remembered here too, so its next
        // copies are refused without a round trip.
        PairOutcome::Replayed => {
            seen.insert(pair.hash, pair.expires_at);
        }
        _ => {}
    }
}

/// Benchmark-only ways to record a pair without part of the machinery, to
/// measure what each part of a signed request costs (benches/wrk/run.sh,
/// `NONCE_MODES`). They accept pairs that are not durable, so they exist
/// only in builds with the `bench-decomposition` feature, never in a normal
/// build, and the server warns at start-up when one is on.
#[cfg(feature = "bench-decomposition")]
mod decomposition {
    use super::{Answer, PairOutcome, SeenNonces};

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

    pub(super) fn record_in_memory(seen: &SeenNonces, hash: u64, expires_at: i64) -> Answer {
        Ok(if seen.insert(hash, expires_at) {
            PairOutcome::Recorded
        } else {
            PairOutcome::Replayed
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::retried_failure::RECOVERED_AFTER;
    use super::*;

    /// Which thread each transaction ran on, and whether transactions fail.
    #[derive(Default)]
    struct Journal {
        threads: Vec<String>,
        /// While set, every transaction fails as a full disk would.
        failing: bool,
    }

    /// A ledger that records in memory and writes down who asked.
    struct FakeLedger(Arc<Mutex<Journal>>);

    impl NonceLedger for FakeLedger {
        fn record(
            &mut self,
            pairs: &[PairToRecord],
            _now: i64,
            _deadline: Instant,
        ) -> Result<Vec<PairOutcome>, StoreError> {
            let mut journal = self.0.lock().unwrap();
            let thread = std::thread::current().name().unwrap_or("?").to_string();
            journal.threads.push(thread);
            if journal.failing {
                return Err(StoreError::Unavailable("disk full".into()));
            }
            Ok(vec![PairOutcome::Recorded; pairs.len()])
        }
        fn touch_keys(&mut self, _: &[(Arc<str>, i64)], _: Instant) -> Result<(), StoreError> {
            Ok(())
        }
        fn purge(&mut self, _: i64, _: Instant) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn window(inline: bool) -> (NonceWindow, Arc<Mutex<Journal>>, Clock) {
        let journal = Arc::new(Mutex::new(Journal::default()));
        let ledger: Box<dyn NonceLedger> = Box::new(FakeLedger(journal.clone()));
        let seen = Arc::new(SeenNonces::new(300, 1_000));
        let clock = Clock::manual(1_000);
        let window = NonceWindow::start(
            vec![ledger],
            seen,
            Duration::from_secs(2),
            clock.clone(),
            inline,
        );
        (window, journal, clock)
    }

    fn record(window: &NonceWindow, nonce: &str) -> Answer {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(window.record("key-1".into(), nonce, 1_301, 0))
    }

    fn last_thread(journal: &Mutex<Journal>) -> String {
        journal.lock().unwrap().threads.last().cloned().unwrap()
    }

    const WRITER: &str = "keygate-nonce-writer-0";

    #[test]
    fn a_request_alone_commits_its_own_pair_once() {
        let (window, journal, _) = window(true);
        let me = std::thread::current().name().unwrap().to_string();
        assert_eq!(
            record(&window, "nonce-aaaaaaaaaaaaaaaa").unwrap(),
            PairOutcome::Recorded
        );
        assert_eq!(
            last_thread(&journal),
            me,
            "committed on the request's thread"
        );
        assert_eq!(
            record(&window, "nonce-aaaaaaaaaaaaaaaa").unwrap(),
            PairOutcome::Replayed
        );
        assert_eq!(
            journal.lock().unwrap().threads.len(),
            1,
            "a replay needs no commit"
        );
        assert!(window.known_replay("key-1", "nonce-aaaaaaaaaaaaaaaa"));
        assert_eq!(window.metrics().commits.get(), 1);
        assert_eq!(window.metrics().pairs_recorded.get(), 1);
    }

    #[test]
    fn without_inline_commits_the_writer_commits() {
        let (window, journal, _) = window(false);
        assert_eq!(
            record(&window, "nonce-bbbbbbbbbbbbbbbb").unwrap(),
            PairOutcome::Recorded
        );
        assert_eq!(last_thread(&journal), WRITER);
    }

    #[test]
    fn while_batches_fail_the_writer_alone_commits_until_it_has_recovered() {
        let (window, journal, _) = window(true);
        journal.lock().unwrap().failing = true;
        // The request's own attempt fails, and the writer's after it: 503.
        assert!(matches!(
            record(&window, "nonce-cccccccccccccccc"),
            Err(StoreError::Unavailable(_))
        ));
        let threads = journal.lock().unwrap().threads.clone();
        assert_eq!(threads.len(), 2, "{threads:?}");
        assert_eq!(threads[1], WRITER);
        assert!(
            !window.known_replay("key-1", "nonce-cccccccccccccccc"),
            "nothing recorded"
        );

        // Cleared: requests still go to the writer until it has succeeded
        // long enough to log the recovery; then they commit alone again.
        journal.lock().unwrap().failing = false;
        let recorded = |nonce| record(&window, nonce).unwrap() == PairOutcome::Recorded;
        assert!(recorded("nonce-cccccccccccccccc"));
        assert_eq!(last_thread(&journal), WRITER);
        std::thread::sleep(RECOVERED_AFTER);
        assert!(recorded("nonce-dddddddddddddddd"));
        assert_eq!(
            last_thread(&journal),
            WRITER,
            "the writer logs the recovery"
        );
        assert!(recorded("nonce-zzzzzzzzzzzzzzzz"));
        assert_ne!(last_thread(&journal), WRITER);
        assert_eq!(window.metrics().failed_commits.get(), 1);
    }

    #[test]
    fn a_request_with_company_hands_its_pair_to_the_writer() {
        let (window, journal, clock) = window(true);
        // This request, and another one being verified.
        let this = window.verifying();
        let other = window.verifying();
        assert_eq!(
            record(&window, "nonce-eeeeeeeeeeeeeeee").unwrap(),
            PairOutcome::Recorded
        );
        assert_eq!(last_thread(&journal), WRITER);
        drop(other);
        // Alone now, but two were verified at once a moment ago: still
        // the writer, until that is `QUIET_BEFORE_INLINE` ago.
        assert_eq!(
            record(&window, "nonce-ffffffffffffffff").unwrap(),
            PairOutcome::Recorded
        );
        assert_eq!(last_thread(&journal), WRITER);
        clock.advance(QUIET_BEFORE_INLINE);
        assert_eq!(
            record(&window, "nonce-gggggggggggggggg").unwrap(),
            PairOutcome::Recorded
        );
        assert_ne!(last_thread(&journal), WRITER);
        drop(this);
    }
}
