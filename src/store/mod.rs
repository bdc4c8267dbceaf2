//! Everything keygate keeps: applications, keys, the nonce window and the
//! audit log, in one SQLite file. Nothing outside this module sees SQL,
//! pragmas or threads.
//!
//! - [`Catalog`]: applications, keys and audit events. Used directly by the
//!   admin CLI (no server needed) and by the server's admin API.
//! - [`Store`]: what the server runs on: the catalog plus an in-memory
//!   [`KeyCache`] of verifying keys and the [`NonceWindow`] writer thread.

mod catalog;
mod key_cache;
mod nonce_window;
pub mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rusqlite::Connection;

pub use catalog::{App, AuditEvent, Catalog, KeyInfo, KeyStatus, NewKey};
pub use key_cache::{CachedKey, KeyCache};
pub use nonce_window::{NonceWindow, WriterMetrics};

use crate::error::Error;

/// How hard a commit of the nonce window tries to survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Durability {
    /// WAL with synchronous=NORMAL: a commit survives the process being
    /// killed (kill -9), not a power cut of the machine.
    Normal,
    /// WAL with synchronous=FULL: every commit is fsynced, so it also
    /// survives a power cut; costs an fsync per batch.
    Full,
}

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub db_path: PathBuf,
    /// `None`: `<db>.master-key` beside the database, made on first start.
    pub master_key_file: Option<PathBuf>,
    pub durability: Durability,
    /// How long a write waits for another connection (or process) to let go
    /// of the database before the request is refused with 503.
    pub busy_timeout: Duration,
}

impl StoreConfig {
    pub fn new(db_path: impl Into<PathBuf>) -> Self {
        StoreConfig {
            db_path: db_path.into(),
            master_key_file: None,
            durability: Durability::Normal,
            busy_timeout: Duration::from_secs(2),
        }
    }

    pub fn master_key_path(&self) -> PathBuf {
        self.master_key_file
            .clone()
            .unwrap_or_else(|| path_beside(&self.db_path, "master-key"))
    }
}

/// `./keygate.db` + `admin-token` = `./keygate.db.admin-token`.
pub fn path_beside(db_path: &Path, suffix: &str) -> PathBuf {
    let mut name = db_path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    db_path.with_file_name(name)
}

pub(crate) fn open_connection(config: &StoreConfig) -> rusqlite::Result<Connection> {
    let is_new = !config.db_path.exists();
    let conn = Connection::open(&config.db_path)?;
    if is_new {
        // Key ciphertexts and partners' traffic patterns are nobody else's
        // business; SQLite gives the -wal and -shm files the same mode.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&config.db_path, std::fs::Permissions::from_mode(0o600));
    }
    conn.busy_timeout(config.busy_timeout)?;
    // WAL lets verifiers read while the nonce writer commits, and lets
    // several keygate processes share the file.
    enable_wal(&conn, config.busy_timeout)?;
    let synchronous = match config.durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// How often the maintenance thread looks for key changes made by other
/// processes (the CLI, another keygate): the bound on how long a verifier
/// may answer from a stale cache. The nonce writer re-checks revocation
/// and expiry inside its transaction, so even within this window a revoked
/// key is never accepted.
const KEY_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The nonce writer leaves WAL checkpoints to the maintenance thread, which
/// runs one every tick on its own connection (see `checkpoint`). A
/// checkpoint copies pages into the database file and syncs it; run by the
/// writer (SQLite's default, every 1000 pages) it stalled every signed
/// request waiting on that commit, which showed in the p99. The writer
/// still checkpoints past this many pages, as a backstop should the
/// maintenance thread fall behind.
const WRITER_AUTOCHECKPOINT_PAGES: i64 = 20_000;
/// How often last-used times are written. Expired nonces are purged every
/// tick instead: at tens of thousands of signed requests a second, two
/// seconds of expired pairs were a sixth of the window's memory, and the
/// log's purge fell behind once commits got smaller (see BENCHMARKS.md).
const FLUSH_LAST_USED_EVERY: u32 = 10; // x KEY_POLL_INTERVAL = 2 s

/// Switching a new file to WAL does not wait on the busy timeout: when
/// several processes (two servers, a server and the CLI) open the same new
/// file at once, the switch fails at once with "database is locked". The
/// mode belongs to the file, so retry until one of them has switched it.
fn enable_wal(conn: &Connection, timeout: Duration) -> rusqlite::Result<()> {
    retry_while_busy(timeout, || conn.pragma_update(None, "journal_mode", "WAL"))
}

/// Runs `attempt` again while SQLite answers "database is locked" (another
/// process holds the write lock), for up to `timeout`, pausing 50 µs and
/// doubling up to 1 ms. SQLite's own busy handler sleeps 1, 2, 5, 10, ...
/// ms, ages next to a commit that holds the lock for tens of microseconds:
/// with two keygate processes on one file it cost a fifth of their
/// throughput and put their p90 at 2–6 ms (BENCHMARKS.md). Pausing 50 µs
/// every time, without doubling, was worse still.
pub(crate) fn retry_while_busy<T>(
    timeout: Duration,
    mut attempt: impl FnMut() -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    const FIRST_PAUSE: Duration = Duration::from_micros(50);
    const LONGEST_PAUSE: Duration = Duration::from_millis(1);
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    loop {
        match attempt() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && Instant::now() + pause < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
            result => return result,
        }
    }
}

/// The server's view of the store.
pub struct Store {
    catalog: Catalog,
    keys: KeyCache,
    nonces: NonceWindow,
}

impl Store {
    pub fn open(config: &StoreConfig) -> Result<Arc<Store>, String> {
        let catalog = Catalog::open(config)?;
        let open = || {
            open_connection(config)
                .map_err(|e| format!("cannot open {}: {e}", config.db_path.display()))
        };
        let writer_conn = open()?;
        writer_conn
            .pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)
            .map_err(|e| format!("cannot configure {}: {e}", config.db_path.display()))?;
        // The writer waits for the write lock its own way (see
        // `retry_while_busy`), not with SQLite's handler.
        writer_conn
            .busy_timeout(Duration::ZERO)
            .map_err(|e| format!("cannot configure {}: {e}", config.db_path.display()))?;
        let checkpoint_conn = open()?;
        // See `checkpoint`: it must never wait, and so never hold off the
        // nonce writer.
        checkpoint_conn
            .busy_timeout(Duration::ZERO)
            .map_err(|e| format!("cannot configure {}: {e}", config.db_path.display()))?;
        let store = Arc::new(Store {
            catalog,
            keys: KeyCache::default(),
            nonces: NonceWindow::start(writer_conn, config.busy_timeout),
        });
        store
            .keys
            .set_version(store.catalog.keys_version().map_err(|e| e.to_string())?);
        start_maintenance(Arc::downgrade(&store), checkpoint_conn);
        Ok(store)
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The verifying key for a key id, from memory when it can be.
    pub fn find_key(&self, key_id: &str) -> Result<Option<Arc<CachedKey>>, Error> {
        if let Some(key) = self.keys.get(key_id) {
            return Ok(Some(key));
        }
        // Not negative-cached: a key created a moment ago by the CLI or
        // another process must work on its first request.
        match self.catalog.verifying_key(key_id)? {
            Some(loaded) => Ok(Some(self.keys.insert(loaded))),
            None => Ok(None),
        }
    }

    /// Records (key, nonce) durably; `Ok` only once it is committed.
    pub async fn record_nonce(
        &self,
        key: &CachedKey,
        nonce: &str,
        expires_at: i64,
    ) -> Result<(), Error> {
        self.nonces
            .record(key.key_id.clone(), nonce, expires_at)
            .await
    }

    /// The nonce writer's counters, for `GET /admin/metrics`.
    pub fn writer_metrics(&self) -> &WriterMetrics {
        self.nonces.metrics()
    }

    /// Pairs in the replay window now.
    pub fn nonce_window_pairs(&self) -> usize {
        self.nonces.pairs()
    }

    /// Requests waiting for the nonce writer now.
    pub fn nonce_queue_len(&self) -> usize {
        self.nonces.queued()
    }

    /// Verifying keys held in memory.
    pub fn cached_keys(&self) -> usize {
        self.keys.count()
    }

    /// Called after an admin change in this process, so that the very next
    /// request sees it without waiting for the poll.
    pub fn key_states_changed(&self) {
        if let Err(e) = self.refresh_key_states() {
            tracing::warn!(error = %e, "could not refresh key states");
        }
    }

    fn refresh_key_states(&self) -> Result<(), Error> {
        let version = self.catalog.keys_version()?;
        if version != self.keys.version() {
            for (key_id, expires_at, revoked_at) in self.catalog.key_states()? {
                self.keys.update_state(&key_id, expires_at, revoked_at);
            }
            self.keys.set_version(version);
        }
        Ok(())
    }

    /// For a graceful stop, once the listeners are closed: the last-used
    /// times of the last seconds are otherwise only in memory, and the
    /// process would exit before the writer got to them.
    pub async fn shut_down(&self) {
        let used = self.keys.take_unflushed_last_used();
        if !used.is_empty() {
            self.nonces.touch_keys_and_wait(used).await;
        }
    }

    fn flush_last_used(&self) {
        let used = self.keys.take_unflushed_last_used();
        if !used.is_empty() {
            self.nonces.touch_keys(used);
        }
    }
}

/// One thread per store: checkpoints the WAL, polls for key changes made
/// elsewhere, purges the nonce window and flushes last-used times. It holds
/// only a weak reference, so it ends when the store is dropped.
fn start_maintenance(store: Weak<Store>, checkpoint_conn: Connection) {
    std::thread::Builder::new()
        .name("keygate-maintenance".into())
        .spawn(move || {
            let mut tick: u32 = 0;
            let mut checkpoint_failures = RetriedFailure::new("WAL checkpoint");
            let mut poll_failures = RetriedFailure::new("polling key states");
            loop {
                std::thread::sleep(KEY_POLL_INTERVAL);
                let Some(store) = store.upgrade() else { return };
                checkpoint_failures.record(Instant::now(), checkpoint(&checkpoint_conn));
                poll_failures.record(Instant::now(), store.refresh_key_states());
                store.nonces.purge_expired(crate::clock::now());
                tick = tick.wrapping_add(1);
                if tick % FLUSH_LAST_USED_EVERY == 0 {
                    store.flush_last_used();
                }
            }
        })
        .expect("spawn maintenance thread");
}

/// Two passes. A passive checkpoint never blocks the nonce writer, but
/// under steady load it never finishes either: frames are appended while
/// it copies, so the WAL was never rewound and grew to the writer's
/// backstop (20,000 pages, 84 MB, in 2 s of load), whose checkpoint then
/// ran on the writer. So a RESTART pass follows: it copies the few frames
/// appended during the first and lets the next commit rewind the WAL, which
/// now stays at 16-32 MB. RESTART holds off writers while it waits, so this
/// connection has no busy timeout: when a commit or a reader is in the way
/// it gives up at once and the next tick tries again.
fn checkpoint(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
    conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(()))
}

/// The log for a task retried every maintenance tick (the checkpoint, the
/// key poll, the nonce purge): the first failure at once, then at most one
/// line a minute while it lasts, and one when it clears. A lasting fault (a
/// full disk, a locked file) would otherwise write five warnings a second.
struct RetriedFailure {
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
    fn new(task: &'static str) -> Self {
        RetriedFailure {
            task,
            failing: None,
        }
    }

    /// Returns whether it logged, for the tests.
    fn record<E: std::fmt::Display>(&mut self, now: Instant, result: Result<(), E>) -> bool {
        let task = self.task;
        match (result, &mut self.failing) {
            (Ok(()), None) => false,
            (Ok(()), Some(failing)) => {
                let for_secs = now.duration_since(failing.since).as_secs();
                tracing::info!(task, for_secs, "recovered");
                self.failing = None;
                true
            }
            (Err(e), None) => {
                tracing::warn!(task, error = %e, "failed; will retry every tick");
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

    #[test]
    fn busy_is_retried_until_the_timeout_other_errors_are_not() {
        fn busy<T>() -> rusqlite::Result<T> {
            Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                None,
            ))
        }
        let mut attempts = 0;
        let result = retry_while_busy(Duration::from_secs(5), || {
            attempts += 1;
            if attempts < 4 {
                busy()
            } else {
                Ok(attempts)
            }
        });
        assert_eq!(result.unwrap(), 4);

        let mut attempts = 0;
        let result = retry_while_busy(Duration::from_secs(5), || {
            attempts += 1;
            Err::<(), _>(rusqlite::Error::InvalidQuery)
        });
        assert!(matches!(result, Err(rusqlite::Error::InvalidQuery)));
        assert_eq!(attempts, 1, "only busy is worth waiting for");

        let mut attempts = 0;
        let result = retry_while_busy(Duration::from_millis(200), || {
            attempts += 1;
            busy::<()>()
        });
        assert!(matches!(
            result,
            Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::DatabaseBusy
        ));
        assert!(attempts > 3, "{attempts} attempts in 200 ms");
    }

    /// Two servers and a CLI started together on a new file all open it,
    /// rather than one failing with "database is locked".
    #[test]
    fn concurrent_opens_of_a_new_file_all_succeed() {
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let config = StoreConfig::new(dir.path().join("new.db"));
            let start = std::sync::Barrier::new(6);
            std::thread::scope(|s| {
                for _ in 0..6 {
                    s.spawn(|| {
                        start.wait();
                        let mut conn = open_connection(&config)
                            .unwrap_or_else(|e| panic!("round {round}: {e}"));
                        schema::migrate(&mut conn).unwrap_or_else(|e| panic!("round {round}: {e}"));
                    });
                }
            });
        }
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// The writer re-reads the key's row inside every transaction. Here
    /// another connection revokes the key (as the CLI or another keygate
    /// would) and the very next record is refused, before the 200 ms poll
    /// could tell the cache.
    #[test]
    fn a_key_revoked_by_another_connection_is_refused_at_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(dir.path().join("keygate.db"));
        let store = Store::open(&config).unwrap();
        let app = store.catalog().create_app("test", "test").unwrap();
        let key_id = store
            .catalog()
            .create_key(&app.app_id, None, "test")
            .unwrap()
            .key_id;
        let key = store.find_key(&key_id).unwrap().unwrap();
        let until = crate::clock::now() + 60;
        block_on(store.record_nonce(&key, "nonce-before-revocation", until)).unwrap();

        let other = Connection::open(dir.path().join("keygate.db")).unwrap();
        other
            .execute(
                "UPDATE keys SET revoked_at = ?2 WHERE key_id = ?1",
                rusqlite::params![&key_id, crate::clock::now() - 1],
            )
            .unwrap();
        let refused = block_on(store.record_nonce(&key, "nonce-after-revocation", until));
        assert!(matches!(refused, Err(Error::KeyRevoked)), "{refused:?}");
    }
}
