//! The replay window: one writer thread owns the write connection and
//! records (key_id, nonce) pairs in shared transactions.
//!
//! Why one thread and shared commits: a commit is the expensive part.
//! Requests queue their pair with a reply channel; the writer takes
//! everything queued (up to `MAX_BATCH`), checks and appends it in one
//! transaction and answers each request only after the commit. A request is
//! therefore never accepted before its nonce is durable.
//!
//! Why an append-only log with an in-memory index: with a unique index on
//! (key_id, nonce), every row lands on a random B-tree page and every commit
//! writes one WAL page per row. Instead each commit appends one row to
//! `nonce_batches` holding every pair it accepted, one line each, so a
//! commit costs one insert and a page or two however many requests share
//! it. Lookups go to [`SeenNonces`], a set of keyed 64-bit hashes of the
//! pairs in the window, rebuilt from the log at start-up.
//!
//! Why it is safe across processes: SQLite lets one write transaction run at
//! a time across every process on the file. Inside it, the writer first
//! reads every batch appended since its previous transaction, so its set
//! holds every pair committed by anyone, then checks and appends. That
//! catch-up needs ids that only grow: SQLite gives a new row max(id) + 1,
//! and the purge never deletes the newest batch, so the maximum never goes
//! back. No pair can be accepted twice.
//!
//! Inside the same transaction the writer re-reads the key's revocation and
//! expiry, so a key revoked by another process is refused even before this
//! process's cache has noticed.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nohash_hasher::IntSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::catalog::KeyStatus;
use super::{retry_while_busy, RetriedFailure};
use crate::clock;
use crate::error::Error;

/// Most pairs recorded in one transaction: large enough to share commits
/// under load, small enough that one transaction holds the lock briefly.
const MAX_BATCH: usize = 1024;
/// Requests that may wait for the writer; beyond it they wait up to
/// `QUEUE_WAIT`, then are refused with 503 rather than queued without bound.
const QUEUE_CAPACITY: usize = 8192;
const QUEUE_WAIT: Duration = Duration::from_secs(2);
/// Expired batches deleted per statement, so a purge never holds the write lock
/// for long; more chunks follow while the last one was full.
const PURGE_CHUNK: usize = 500;
const PURGE_MAX_CHUNKS: usize = 20;

type Reply = oneshot::Sender<Result<(), Error>>;

/// A request waiting for its pair to be recorded.
struct PendingPair {
    key_id: Arc<str>,
    nonce: Box<str>,
    expires_at: i64,
    /// The pair's hash in [`SeenNonces`], computed by the request.
    hash: u64,
    reply: Reply,
}

enum Job {
    Record(PendingPair),
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
            // A commit takes tens of µs, one with an fsync a few hundred, one
            // waiting for another process's lock up to the busy timeout.
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
    /// Shared with the writer, which alone adds to it. Requests only look:
    /// a pair already in the window is refused here, so replays never
    /// queue for a commit (a flood of them cannot slow fresh requests).
    seen: Arc<SeenNonces>,
    hasher: PairHasher,
    metrics: WriterMetrics,
}

impl NonceWindow {
    /// `conn` must have no busy handler: `busy_timeout` is how long the
    /// writer itself retries while another process holds the write lock.
    pub(crate) fn start(conn: Connection, busy_timeout: Duration) -> NonceWindow {
        #[cfg(feature = "bench-decomposition")]
        decomposition::mode(); // warns now, not at the first request
        let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
        let seen = SeenNonces::new();
        let hasher = seen.hasher.clone();
        let seen = Arc::new(seen);
        let writer_seen = seen.clone();
        let metrics = WriterMetrics::default();
        let writer_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("keygate-nonce-writer".into())
            .spawn(move || Writer::new(conn, writer_seen, busy_timeout, writer_metrics).run(queue))
            .expect("spawn nonce writer thread");
        NonceWindow {
            jobs,
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
    /// was not: `NonceReused`, `KeyRevoked`, `KeyExpired` or `Unavailable`.
    pub async fn record(
        &self,
        key_id: Arc<str>,
        nonce: &str,
        expires_at: i64,
    ) -> Result<(), Error> {
        let hash = self.hasher.hash(&key_id, nonce);
        #[cfg(feature = "bench-decomposition")]
        if decomposition::mode() == decomposition::Mode::MemoryOnly {
            return decomposition::record_in_memory(&self.seen, hash, expires_at);
        }
        // A pair in the set was accepted before (or is being committed right
        // now): a replay, refused without a commit. A pair not in it may
        // still have been recorded by another process; the writer decides
        // that inside its transaction, after catching up.
        if self.seen.contains(hash) {
            return Err(Error::NonceReused);
        }
        let (reply, answer) = oneshot::channel();
        let job = Job::Record(PendingPair {
            key_id,
            nonce: nonce.into(),
            expires_at,
            hash,
            reply,
        });
        // The queue almost always has room; only a full one needs the timer.
        let job = match self.jobs.try_send(job) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Full(job)) => Some(job),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(Error::Unavailable("nonce writer stopped".into()))
            }
        };
        if let Some(job) = job {
            // Boxed: the timer would otherwise sit in every request's future.
            let wait = Box::pin(self.jobs.send_timeout(job, QUEUE_WAIT));
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

/// Hashes a (key_id, nonce) pair with SipHash under a random per-process
/// key. The requests (checking for replays) and the writer (recording)
/// must hash alike, so both hold a clone of the set's one hasher.
#[derive(Clone)]
struct PairHasher(RandomState);

impl PairHasher {
    fn hash(&self, key_id: &str, nonce: &str) -> u64 {
        self.0.hash_one((key_id, nonce))
    }
}

/// The pairs in the window, as keyed 64-bit hashes (SipHash with a random
/// per-process key), indexed by expiry for purging. A hash collision can
/// only make a fresh pair look used (a spurious `nonce_reused`, odds about
/// window_size / 2^64 per request), never let a used one through.
///
/// Split into shards, each behind its own lock, for two reasons:
/// - a hash table doubles by building the new table beside the old one. In
///   one piece, the whole set's two copies were alive at once: 38 MB of a
///   152.7 MB peak with 3.78 M pairs (BENCHMARKS.md). A shard doubles
///   alone, so only a sixteenth of it is ever copied at a time;
/// - the requests' replay check and the writer's inserts rarely wait for
///   one another.
struct SeenNonces {
    hasher: PairHasher,
    shards: [Mutex<Shard>; SHARDS],
}

const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    set: IntSet<u64>,
    by_expiry: BTreeMap<i64, Vec<u64>>,
}

impl SeenNonces {
    fn new() -> Self {
        SeenNonces {
            hasher: PairHasher(RandomState::new()),
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Shard> {
        // Bits no table index uses: the low bits pick a bucket and the top
        // seven are hashbrown's tag within a group, so a shard must not fix
        // either (the set hashes a pair's hash by itself, see `IntSet`).
        lock(&self.shards[(hash >> 32) as usize % SHARDS])
    }

    /// Pairs across every shard, each counted under its own lock.
    fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).set.len()).sum()
    }

    fn contains(&self, hash: u64) -> bool {
        self.shard(hash).set.contains(&hash)
    }

    /// False when the pair is already in the window.
    fn insert(&self, hash: u64, expires_at: i64) -> bool {
        self.shard(hash).insert(hash, expires_at)
    }

    /// Undoes `insert` for a transaction that did not commit.
    fn forget(&self, hash: u64, expires_at: i64) {
        self.shard(hash).forget(hash, expires_at);
    }

    /// One shard at a time, so a request waits at most for one shard's
    /// purge.
    fn purge(&self, now: i64) {
        for shard in &self.shards {
            lock(shard).purge(now);
        }
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Every call leaves its shard consistent, so a panic elsewhere leaves
    // nothing half-done.
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shard {
    fn insert(&mut self, hash: u64, expires_at: i64) -> bool {
        if !self.set.insert(hash) {
            return false;
        }
        self.by_expiry.entry(expires_at).or_default().push(hash);
        true
    }

    fn forget(&mut self, hash: u64, expires_at: i64) {
        self.set.remove(&hash);
        if let Some(bucket) = self.by_expiry.get_mut(&expires_at) {
            bucket.retain(|h| *h != hash);
        }
    }

    fn purge(&mut self, now: i64) {
        while let Some(entry) = self.by_expiry.first_entry() {
            if *entry.key() >= now {
                break;
            }
            for hash in entry.remove() {
                self.set.remove(&hash);
            }
        }
    }
}

struct Writer {
    conn: Connection,
    seen: Arc<SeenNonces>,
    /// The highest log id this writer has read or written.
    last_seen_id: i64,
    busy_timeout: Duration,
    purge_failures: RetriedFailure,
    metrics: WriterMetrics,
}

impl Writer {
    fn new(
        conn: Connection,
        seen: Arc<SeenNonces>,
        busy_timeout: Duration,
        metrics: WriterMetrics,
    ) -> Writer {
        let mut writer = Writer {
            conn,
            seen,
            last_seen_id: 0,
            busy_timeout,
            purge_failures: RetriedFailure::new("purging expired nonces"),
            metrics,
        };
        // Load the window now rather than inside the first request's
        // transaction (one SELECT reads one consistent snapshot); the first
        // write transaction catches up whatever is appended meanwhile.
        if let Err(e) = Self::catch_up_on(&writer.conn, &writer.seen, &mut writer.last_seen_id) {
            tracing::warn!(error = %e, "could not preload the nonce window; the first batch will");
        }
        writer
    }

    /// Adds every pair appended since `last_seen_id` (by this or another
    /// process) to the set.
    fn catch_up_on(
        conn: &Connection,
        seen: &SeenNonces,
        last_seen_id: &mut i64,
    ) -> rusqlite::Result<()> {
        let now = clock::now();
        let mut stmt = conn.prepare_cached(
            "SELECT id, expires_at, entries FROM nonce_batches WHERE id > ?1 ORDER BY id",
        )?;
        let mut rows = stmt.query([*last_seen_id])?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let latest_expiry: i64 = row.get(1)?;
            if latest_expiry >= now {
                for (key_id, nonce, expires_at) in decode_entries(row.get_ref(2)?.as_str()?) {
                    if expires_at >= now {
                        let hash = seen.hasher.hash(key_id, nonce);
                        seen.insert(hash, expires_at);
                    }
                }
            }
            *last_seen_id = id;
        }
        Ok(())
    }

    fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // Group commit without a timer: whatever queued while the last
        // commit ran shares the next one. Waiting on purpose for more
        // requests to join (200 µs) made fewer, larger commits but cost more
        // throughput than it saved: with a fixed number of connections
        // every microsecond a request waits is a microsecond its connection
        // sends nothing (benches/wrk, interleaved runs: signed/unauthenticated
        // 0.68 with the wait, 0.73 without).
        while let Some(first) = queue.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            self.process(&mut batch);
        }
    }

    fn process(&mut self, batch: &mut Vec<Job>) {
        let mut records = Vec::with_capacity(batch.len());
        let mut purge_at = None;
        let mut touches = Vec::new();
        let mut touches_done = Vec::new();
        for job in batch.drain(..) {
            match job {
                Job::Record(pending) => records.push(pending),
                Job::Purge { now } => purge_at = Some(now),
                Job::TouchKeys { used, done } => {
                    touches.extend(used);
                    touches_done.extend(done);
                }
            }
        }

        #[cfg(feature = "bench-decomposition")]
        if decomposition::mode() == decomposition::Mode::WriterThreadOnly {
            for pending in records.drain(..) {
                let outcome =
                    decomposition::record_in_memory(&self.seen, pending.hash, pending.expires_at);
                let _ = pending.reply.send(outcome);
            }
        }
        if !records.is_empty() || !touches.is_empty() {
            let started = std::time::Instant::now();
            let recorded = retry_while_busy(self.busy_timeout, || {
                let mut added = Vec::new();
                let result = self.record_batch(&records, &touches, &mut added);
                if result.is_err() {
                    // Nothing was committed: the set must not remember it.
                    for (hash, expires_at) in added {
                        self.seen.forget(hash, expires_at);
                    }
                }
                result
            });
            self.metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            match recorded {
                Ok(outcomes) => {
                    let recorded = outcomes.iter().filter(|o| o.is_ok()).count();
                    self.metrics.commits.inc();
                    self.metrics.pairs_recorded.inc_by(recorded as u64);
                    if !records.is_empty() {
                        self.metrics
                            .requests_per_commit
                            .observe(records.len() as f64);
                    }
                    for (pending, outcome) in records.into_iter().zip(outcomes) {
                        let _ = pending.reply.send(outcome);
                    }
                }
                Err(e) => {
                    self.metrics.failed_commits.inc();
                    tracing::error!(error = %e, rows = records.len(), "nonce window cannot record; refusing these requests (fail closed)");
                    for pending in records {
                        let _ = pending.reply.send(Err(Error::Unavailable(e.to_string())));
                    }
                }
            }
        }
        for done in touches_done {
            let _ = done.send(());
        }
        if let Some(now) = purge_at {
            self.seen.purge(now);
            let purged = retry_while_busy(self.busy_timeout, || self.purge_log(now));
            self.purge_failures
                .record(std::time::Instant::now(), purged);
        }
    }

    /// One transaction for the whole batch. The outcome of each record is
    /// only meaningful if the commit succeeds, which is why it is returned
    /// rather than sent from inside the transaction. `added` collects what
    /// went into the set, so a failed commit can take it out again.
    fn record_batch(
        &mut self,
        records: &[PendingPair],
        touches: &[(Arc<str>, i64)],
        added: &mut Vec<(u64, i64)>,
    ) -> rusqlite::Result<Vec<Result<(), Error>>> {
        let now = clock::now();
        let tx = WriteTransaction::begin(&self.conn)?;
        Self::catch_up_on(&tx, &self.seen, &mut self.last_seen_id)?;
        let mut outcomes = Vec::with_capacity(records.len());
        let mut entries = String::new();
        let mut latest_expiry = i64::MIN;
        {
            // A batch is usually one or a few keys: read each key's state
            // once per transaction, not once per row.
            let mut key_states: HashMap<&str, Option<KeyStatus>> = HashMap::new();
            let mut key_state =
                tx.prepare_cached("SELECT expires_at, revoked_at FROM keys WHERE key_id = ?1")?;
            for PendingPair {
                key_id,
                nonce,
                expires_at,
                hash,
                ..
            } in records
            {
                if !key_states.contains_key(&**key_id) {
                    let status = key_state
                        .query_row([&**key_id], |r| {
                            Ok(KeyStatus::at(now, r.get(0)?, r.get(1)?))
                        })
                        .optional()?;
                    key_states.insert(key_id, status);
                }
                let outcome = key_states[&**key_id]
                    .ok_or(Error::UnknownKey)
                    .and_then(KeyStatus::check_usable)
                    .and_then(|()| {
                        if self.seen.insert(*hash, *expires_at) {
                            added.push((*hash, *expires_at));
                            encode_entry(&mut entries, key_id, nonce, *expires_at);
                            latest_expiry = latest_expiry.max(*expires_at);
                            Ok(())
                        } else {
                            Err(Error::NonceReused)
                        }
                    });
                outcomes.push(outcome);
            }
            if !entries.is_empty() {
                tx.prepare_cached(
                    "INSERT INTO nonce_batches(expires_at, entries) VALUES (?1, ?2)",
                )?
                .execute(params![latest_expiry, entries])?;
            }
            let mut touch = tx.prepare_cached(
                "UPDATE keys SET last_used_at = ?2 WHERE key_id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
            )?;
            for (key_id, used_at) in touches {
                touch.execute(params![&**key_id, used_at])?;
            }
        }
        let last_id = tx.last_insert_rowid();
        tx.commit()?;
        if !entries.is_empty() {
            self.last_seen_id = self.last_seen_id.max(last_id);
        }
        Ok(outcomes)
    }

    /// Deletes expired batches from the oldest end of the log, a chunk at a
    /// time so the write lock is never held for long. The newest batch is
    /// never deleted (it keeps ids growing: see the module comment); once
    /// expired, its pairs are blanked instead. A batch signed ahead of the
    /// clock may outlive younger ones; it stays until it expires, and the
    /// chunk moves on past it next time.
    fn purge_log(&mut self, now: i64) -> rusqlite::Result<()> {
        let mut delete = self.conn.prepare_cached(
            "DELETE FROM nonce_batches WHERE expires_at < ?1 AND id IN \
             (SELECT id FROM nonce_batches ORDER BY id LIMIT ?2) \
             AND id < (SELECT max(id) FROM nonce_batches)",
        )?;
        for _ in 0..PURGE_MAX_CHUNKS {
            if delete.execute(params![now, PURGE_CHUNK as i64])? == 0 {
                break;
            }
        }
        self.conn
            .prepare_cached(
                "UPDATE nonce_batches SET entries = '' WHERE expires_at < ?1 AND entries != '' \
                 AND id = (SELECT max(id) FROM nonce_batches)",
            )?
            .execute([now])?;
        Ok(())
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
        /// Through the writer thread and back, without SQLite.
        WriterThreadOnly,
        /// Checked and remembered by the request itself: no writer thread,
        /// no SQLite.
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

/// `BEGIN IMMEDIATE` ... `COMMIT` with both statements from the connection's
/// statement cache. rusqlite's `Transaction` parses them again for every
/// transaction, which was a twentieth of the writer's time under load
/// (perf, benches/wrk). Dropped without `commit`, it rolls back.
struct WriteTransaction<'c> {
    conn: &'c Connection,
    committed: bool,
}

impl<'c> WriteTransaction<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<Self> {
        conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
        Ok(WriteTransaction {
            conn,
            committed: false,
        })
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.committed = true;
        Ok(())
    }
}

impl std::ops::Deref for WriteTransaction<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl Drop for WriteTransaction<'_> {
    fn drop(&mut self) {
        // A failed statement or COMMIT (e.g. SQLITE_BUSY) leaves the
        // transaction open; nothing of it may stay.
        if !self.committed && !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "nonce writer could not roll back");
            }
        }
    }
}

/// One line per pair: `key_id TAB nonce TAB expires_at LF`. Neither a key
/// id nor a nonce can hold a tab or a line feed (KG1 nonces are
/// `[A-Za-z0-9_-]`, RFC 9421 nonces are structured-field strings, which
/// allow printable ASCII only), and the text stays readable in the sqlite3
/// shell.
fn encode_entry(entries: &mut String, key_id: &str, nonce: &str, expires_at: i64) {
    use std::fmt::Write;
    debug_assert!(!key_id.contains(['\t', '\n']) && !nonce.contains(['\t', '\n']));
    entries.push_str(key_id);
    entries.push('\t');
    entries.push_str(nonce);
    entries.push('\t');
    let _ = write!(entries, "{expires_at}");
    entries.push('\n');
}

/// The pairs of one batch; a malformed line (never written by keygate) is
/// skipped rather than trusted.
fn decode_entries(entries: &str) -> impl Iterator<Item = (&str, &str, i64)> {
    entries.lines().filter_map(|line| {
        let mut fields = line.split('\t');
        let key_id = fields.next()?;
        let nonce = fields.next()?;
        let expires_at = fields.next()?.parse().ok()?;
        fields
            .next()
            .is_none()
            .then_some((key_id, nonce, expires_at))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_transaction_rolls_back_unless_committed() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t(x)").unwrap();
        let count = || -> i64 {
            conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap()
        };
        {
            let tx = WriteTransaction::begin(&conn).unwrap();
            tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
        }
        assert_eq!(count(), 0);
        assert!(conn.is_autocommit(), "the dropped transaction is closed");
        let tx = WriteTransaction::begin(&conn).unwrap();
        tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
        tx.commit().unwrap();
        assert_eq!(count(), 1);
        // The cached statements serve the next transaction too.
        let tx = WriteTransaction::begin(&conn).unwrap();
        tx.execute("INSERT INTO t VALUES (2)", []).unwrap();
        tx.commit().unwrap();
        assert_eq!(count(), 2);
    }

    /// Against a plain model: inserts, replays, rollbacks and purges give
    /// the same answers however the pairs fall into shards, and every shard
    /// gets its share.
    #[test]
    fn the_sharded_set_behaves_like_one_set() {
        use std::collections::HashMap;
        let seen = SeenNonces::new();
        let mut model: HashMap<u64, i64> = HashMap::new();
        for i in 0..20_000u32 {
            let hash = seen.hasher.hash("pk_a", &i.to_string());
            let expires_at = i64::from(i % 50);
            assert_eq!(
                seen.insert(hash, expires_at),
                model.insert(hash, expires_at).is_none()
            );
            assert!(!seen.insert(hash, expires_at + 1), "a replay is refused");
        }
        for shard in &seen.shards {
            let len = lock(shard).set.len();
            assert!((1000..1500).contains(&len), "a shard holds {len} of 20000");
        }
        let forgotten: Vec<_> = model.iter().take(100).map(|(h, e)| (*h, *e)).collect();
        for (hash, expires_at) in &forgotten {
            seen.forget(*hash, *expires_at);
            model.remove(hash);
        }
        seen.purge(25);
        model.retain(|_, expires_at| *expires_at >= 25);
        for i in 0..20_000u32 {
            let hash = seen.hasher.hash("pk_a", &i.to_string());
            assert_eq!(seen.contains(hash), model.contains_key(&hash), "pair {i}");
        }
        assert_eq!(seen.len(), model.len());
    }

    #[test]
    fn entries_round_trip_and_malformed_lines_are_skipped() {
        let mut text = String::new();
        encode_entry(&mut text, "pk_a", "nonce-0123456789abcdef", 1_700_000_301);
        encode_entry(&mut text, "pk_b", "a nonce with \"quotes\" and spaces", -5);
        assert_eq!(
            decode_entries(&text).collect::<Vec<_>>(),
            [
                ("pk_a", "nonce-0123456789abcdef", 1_700_000_301),
                ("pk_b", "a nonce with \"quotes\" and spaces", -5),
            ]
        );
        let damaged = "pk_a\tn1\n\npk_a\tn2\tsoon\npk_a\tn3\t7\textra\npk_a\tn4\t9\n";
        assert_eq!(
            decode_entries(damaged).collect::<Vec<_>>(),
            [("pk_a", "n4", 9)]
        );
    }

    fn writer_on(path: &std::path::Path) -> Writer {
        let mut conn = Connection::open(path).unwrap();
        crate::store::schema::migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO apps VALUES ('app', 'test', 0);
             INSERT INTO keys(key_id, app_id, secret_nonce, secret_ciphertext, created_at)
                 VALUES ('pk_a', 'app', x'00', x'00', 0);",
        )
        .unwrap();
        Writer::new(
            conn,
            Arc::new(SeenNonces::new()),
            Duration::from_secs(2),
            WriterMetrics::default(),
        )
    }

    fn record(writer: &mut Writer, nonces: &[&str], expires_at: i64) -> Vec<Result<(), Error>> {
        let records: Vec<_> = nonces
            .iter()
            .map(|n| PendingPair {
                key_id: Arc::from("pk_a"),
                nonce: Box::from(*n),
                expires_at,
                hash: writer.seen.hasher.hash("pk_a", n),
                reply: oneshot::channel().0,
            })
            .collect();
        writer.record_batch(&records, &[], &mut Vec::new()).unwrap()
    }

    /// The catch-up relies on ids that never go back, even when a purge
    /// expires everything: the newest batch stays (blanked), so the next
    /// batch gets a higher id and another process's writer still reads it.
    #[test]
    fn purge_keeps_ids_growing_and_blanks_the_newest_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("window.db");
        let mut ours = writer_on(&path);
        let mut theirs = Writer::new(
            Connection::open(&path).unwrap(),
            Arc::new(SeenNonces::new()),
            Duration::from_secs(2),
            WriterMetrics::default(),
        );
        let soon = clock::now() + 60;
        assert!(record(&mut ours, &["n1", "n2"], soon)
            .iter()
            .all(Result::is_ok));
        assert!(record(&mut ours, &["n3"], soon).iter().all(Result::is_ok));
        let last_before: i64 = ours
            .conn
            .query_row("SELECT max(id) FROM nonce_batches", [], |r| r.get(0))
            .unwrap();

        ours.purge_log(soon + 1).unwrap();
        let rows: Vec<(i64, String)> = ours
            .conn
            .prepare("SELECT id, entries FROM nonce_batches")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, [(last_before, String::new())]);

        assert!(record(&mut ours, &["n4"], soon).iter().all(Result::is_ok));
        // The other writer has read nothing yet: it must catch up n4, which
        // came after the purge, before it decides.
        let outcomes = record(&mut theirs, &["n4", "n5"], soon);
        assert!(
            matches!(outcomes[0], Err(Error::NonceReused)),
            "{outcomes:?}"
        );
        assert!(outcomes[1].is_ok(), "{outcomes:?}");
        let last_after: i64 = ours
            .conn
            .query_row("SELECT max(id) FROM nonce_batches", [], |r| r.get(0))
            .unwrap();
        assert!(last_after > last_before);
    }
}
