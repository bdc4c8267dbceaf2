//! Everything keygate keeps: applications, keys, the replay window and the
//! audit log. Storage sits behind two traits ([`backend`]); one folder per
//! backend holds all that speaks its database:
//!
//! - `sqlite/`: the embedded default, one file, no setup;
//! - `postgres/`: for several keygate instances on several machines.
//!
//! What is written once, above them:
//! - [`Catalog`]: the rules for applications, keys and audit events. Used
//!   directly by the admin CLI (no server needed) and by the admin API.
//! - [`Store`]: what the server runs on: the catalog, an in-memory
//!   [`KeyCache`] of verifying keys, the [`NonceWindow`] group-commit writer
//!   with its in-memory front ([`SeenNonces`]), and a maintenance thread.

pub mod backend;
mod catalog;
mod company_wait;
mod database;
mod database_clock;
mod error;
mod fingerprint_table;
mod key_cache;
pub(crate) mod migrations;
mod nonce_window;
pub mod postgres;
mod retried_failure;
mod seen_nonces;
pub mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

pub use backend::PairOutcome;
pub use catalog::{App, AuditEvent, Catalog, KeyInfo, KeyStatus, KeyUnusable, NewKey};
pub use database::{redact_password, Database};
pub use database_clock::DatabaseClock;
pub use error::StoreError;
pub use key_cache::{CachedKey, KeyCache, VerifyingKey};
pub use nonce_window::{NonceWindow, Verifying, WriterMetrics};
pub use seen_nonces::SeenNonces;

use crate::clock::Clock;
use crate::credentials::MasterKey;
use backend::{CatalogBackend, NonceLedger};
use retried_failure::RetriedFailure;

/// How hard a commit of the nonce window tries to survive a crash (SQLite;
/// on PostgreSQL every commit is synchronous, see `postgres/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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
    pub database: Database,
    /// `None`: `<db>.master-key` beside a SQLite file, made on first start.
    /// Required with PostgreSQL, where every instance must share one key.
    pub master_key_file: Option<PathBuf>,
    pub durability: Durability,
    /// How long a write waits for the database (another process's lock on
    /// SQLite; an answer from PostgreSQL) before the request is refused
    /// with 503.
    pub busy_timeout: Duration,
}

impl StoreConfig {
    pub fn new(database: impl Into<Database>) -> Self {
        StoreConfig {
            database: database.into(),
            master_key_file: None,
            durability: Durability::Normal,
            busy_timeout: Duration::from_secs(2),
        }
    }

    fn sqlite_settings(&self) -> sqlite::Settings {
        sqlite::Settings {
            durability: self.durability,
            busy_timeout: self.busy_timeout,
        }
    }
}

/// `./keygate.db` + `admin-token` = `./keygate.db.admin-token`.
pub fn path_beside(db_path: &Path, suffix: &str) -> PathBuf {
    let mut name = db_path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    db_path.with_file_name(name)
}

/// This process, as the audit log names it: `serve@host:pid` or `cli@host`.
pub fn instance_name(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    match role {
        "serve" => format!("serve@{host}:{}", std::process::id()),
        _ => format!("{role}@{host}"),
    }
}

/// Opens the catalog (creating the database or applying migrations as
/// needed) and checks the master key against it.
pub fn open_catalog(
    config: &StoreConfig,
    instance: String,
    clock: Clock,
) -> Result<Catalog, String> {
    let backend: Arc<dyn CatalogBackend> = match &config.database {
        Database::Sqlite(path) => sqlite::open_catalog(path, config.sqlite_settings())?,
        Database::Postgres(url) => postgres::open_catalog(url, config.busy_timeout)?,
    };
    let (master_key, key_file) = load_master_key(config, backend.as_ref())?;
    Catalog::new(backend, master_key, &key_file, instance, clock)
}

/// With SQLite the key file defaults to one beside the database and is
/// made on first start. With PostgreSQL every instance must hold the same
/// key, so the file must be named, and keygate makes one only for a
/// database that has never had one: anything else would be a new key that
/// silently differs from the other instances'.
fn load_master_key(
    config: &StoreConfig,
    backend: &dyn CatalogBackend,
) -> Result<(MasterKey, String), String> {
    let (path, may_create) = match (&config.database, &config.master_key_file) {
        (Database::Sqlite(db), file) => (
            file.clone()
                .unwrap_or_else(|| path_beside(db, "master-key")),
            true,
        ),
        (Database::Postgres(_), Some(file)) => {
            let database_has_key = backend
                .master_key_check()
                .map_err(|e| e.to_string())?
                .is_some();
            if !file.exists() && database_has_key {
                return Err(format!(
                    "master key file {} does not exist, and this PostgreSQL database already has a \
                     master key: copy the file from an instance that runs on this database \
                     (every instance needs the same one) and start again",
                    file.display()
                ));
            }
            (file.clone(), !database_has_key)
        }
        (Database::Postgres(_), None) => {
            return Err(
                "with a PostgreSQL database, set KEYGATE_MASTER_KEY_FILE (or \
                        --master-key-file) to the master key file every instance shares; on a \
                        new database keygate creates it there, then copy it to the other \
                        instances"
                    .into(),
            )
        }
    };
    let shown = path.display().to_string();
    let (key, created) = if may_create {
        MasterKey::load_or_create(&path)?
    } else {
        (MasterKey::load(&path)?, false)
    };
    if created {
        tracing::info!(path = %shown, "generated a new master key (mode 0600); back it up, and give every other instance on this database the same file: without it no key secret can be read");
    }
    Ok((key, shown))
}

/// How often the maintenance thread looks for key changes made by other
/// processes (the CLI, another keygate): the bound on how long a verifier
/// may answer from a stale cache. The ledger re-checks revocation and
/// expiry inside its transaction, so even within this window a revoked key
/// is never accepted.
const KEY_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How often last-used times are written. Expired nonces are purged every
/// tick instead: at tens of thousands of signed requests a second, two
/// seconds of expired pairs were a sixth of the window's memory, and the
/// log's purge fell behind once commits got smaller (see BENCHMARKS.md).
const FLUSH_LAST_USED_EVERY: u32 = 10; // x KEY_POLL_INTERVAL = 2 s
/// How often the offset from the database's clock is measured (PostgreSQL):
/// a clock stepped between two readings goes unseen until the next, and
/// the purge's slack (`postgres/purge.rs`) covers only a little of that.
const MEASURE_CLOCK_EVERY: u32 = 25; // x KEY_POLL_INTERVAL = 5 s

/// The server's view of the store.
pub struct Store {
    catalog: Catalog,
    keys: KeyCache,
    nonces: NonceWindow,
    /// Database reads that confirm a policy refusal, at once: a partner
    /// flooding refused requests must not queue a read per request.
    refusal_checks: tokio::sync::Semaphore,
    /// This instance's offset from a shared database's clock, and the
    /// guard on it.
    clock: DatabaseClock,
    /// The clock skew the server allows: how long past a pair's expiry a
    /// shared database keeps it.
    skew_secs: u32,
    /// No signature made before this is accepted: when the database was
    /// restored from a backup, whose replay window is older than the
    /// requests accepted since (`sqlite/backup.rs`). `i64::MIN`: never.
    signed_not_before: i64,
}

/// See `Store::refusal_checks`: enough for every honest refusal, few enough
/// that a flood costs the database little.
const CONCURRENT_REFUSAL_CHECKS: usize = 4;

impl Store {
    /// `skew_secs`: the clock skew the server allows (`KEYGATE_SKEW_SECS`);
    /// `clock`: the application's one clock.
    pub fn open(config: &StoreConfig, skew_secs: u32, clock: Clock) -> Result<Arc<Store>, String> {
        let catalog = open_catalog(config, instance_name("serve"), clock.clone())?;
        let signed_not_before = catalog
            .backend()
            .signed_not_before()
            .map_err(|e| e.to_string())?;
        let seen = Arc::new(SeenNonces::new(skew_secs, clock.now()));
        let ledgers: Vec<Box<dyn NonceLedger>> = match &config.database {
            Database::Sqlite(path) => vec![Box::new(sqlite::open_ledger(
                path,
                config.sqlite_settings(),
                seen.clone(),
                clock.now(),
            )?)],
            Database::Postgres(url) => (0..postgres::ledger_connections()?)
                .map(|_| {
                    postgres::open_ledger(url, config.busy_timeout)
                        .map(|ledger| Box::new(ledger) as Box<dyn NonceLedger>)
                })
                .collect::<Result<_, _>>()?,
        };
        // A request alone commits its own pair only where a commit is tens
        // of microseconds: SQLite without an fsync per commit.
        let commits_inline = matches!(config.database, Database::Sqlite(_))
            && config.durability == Durability::Normal;
        let store = Arc::new(Store {
            catalog,
            keys: KeyCache::new(clock.clone()),
            nonces: NonceWindow::start(ledgers, seen, config.busy_timeout, clock, commits_inline),
            refusal_checks: tokio::sync::Semaphore::new(CONCURRENT_REFUSAL_CHECKS),
            clock: DatabaseClock::new(skew_secs),
            skew_secs,
            signed_not_before: signed_not_before.unwrap_or(i64::MIN),
        });
        if let Some(at) = signed_not_before {
            tracing::info!(
                restored_at = at,
                "the database was restored from a backup: signatures made before then are refused"
            );
        }
        // Before the first request: an instance that starts with a clock
        // far off refuses from the start, not from its first tick.
        if let Err(e) = store.clock.measure(store.catalog.backend().as_ref()) {
            tracing::warn!(error = %e, "could not read the database's clock; retrying every few seconds");
        }
        store.keys.set_version(
            store
                .catalog
                .backend()
                .keys_version()
                .map_err(|e| e.to_string())?,
        );
        start_maintenance(Arc::downgrade(&store));
        Ok(store)
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The application's one clock.
    pub fn clock(&self) -> &Clock {
        self.catalog.clock()
    }

    /// The verifying key for a key id, from memory when it can be. A miss
    /// reads the database on the blocking pool: with PostgreSQL that is a
    /// round trip, which must not stall the worker's other connections.
    pub async fn find_key(
        self: &Arc<Self>,
        key_id: &str,
    ) -> Result<Option<Arc<CachedKey>>, StoreError> {
        if let Some(key) = self.keys.get(key_id) {
            return Ok(Some(key));
        }
        // Boxed: the blocking-pool hand-off would otherwise sit in every
        // signed request's future (see `signed_request`'s size test).
        Box::pin(self.load_key(key_id.to_owned())).await
    }

    /// Not negative-cached: a key created a moment ago by the CLI or
    /// another process must work on its first request.
    async fn load_key(
        self: &Arc<Self>,
        key_id: String,
    ) -> Result<Option<Arc<CachedKey>>, StoreError> {
        let store = self.clone();
        let loaded = tokio::task::spawn_blocking(move || store.catalog.verifying_key(&key_id))
            .await
            .map_err(|e| StoreError::Unavailable(format!("key lookup: {e}")))??;
        Ok(loaded.map(|loaded| self.keys.insert(loaded)))
    }

    /// Records (key, nonce) durably: `Ok(Recorded)` only once it is
    /// committed, else the outcome that refused it. `policy_seq` is the
    /// policy version the request was checked against: `PolicyChanged`
    /// when the stored one is newer (see [`Self::reload_policies`]).
    pub async fn record_nonce(
        &self,
        key: &CachedKey,
        nonce: &str,
        expires_at: i64,
        policy_seq: i64,
    ) -> Result<PairOutcome, StoreError> {
        self.nonces
            .record(key.key_id.clone(), nonce, expires_at, policy_seq)
            .await
    }

    /// The earliest signing time accepted (after a restore; else `i64::MIN`).
    pub fn signed_not_before(&self) -> i64 {
        self.signed_not_before
    }

    /// Why signed requests must be refused now, if they must: this
    /// instance's clock is further from the shared database's than the
    /// skew (see `database_clock.rs`).
    pub fn clock_refusal(&self) -> Option<String> {
        self.clock.refusal()
    }

    /// Database clock minus this instance's, in seconds (PostgreSQL, once
    /// measured), for `GET /admin/metrics`.
    pub fn database_clock_offset_secs(&self) -> Option<f64> {
        self.clock.offset_secs()
    }

    /// Held by a signed request while it is verified: see
    /// [`NonceWindow::verifying`].
    pub fn verifying(&self) -> Verifying<'_> {
        self.nonces.verifying()
    }

    /// A pair this process has recorded already: a replay, refused before
    /// the access policy can spend an allowance on it.
    pub fn known_replay(&self, key: &CachedKey, nonce: &str) -> bool {
        self.nonces.known_replay(&key.key_id, nonce)
    }

    /// Before a route or source refusal: reads the key's policies again,
    /// so a policy relaxed a moment ago in another process applies to this
    /// request. `true` when they had changed. While
    /// `CONCURRENT_REFUSAL_CHECKS` reads are running already (a flood of
    /// refused requests), it reads nothing and says `false`: the refusal
    /// stands on the cache, which the 200 ms poll keeps fresh.
    pub async fn recheck_before_refusal(
        self: &Arc<Self>,
        key: &Arc<CachedKey>,
    ) -> Result<bool, StoreError> {
        let Ok(_permit) = self.refusal_checks.try_acquire() else {
            return Ok(false);
        };
        self.reload_policies(key).await
    }

    /// Reads a key's policies (and its application's) from the database
    /// into the cache: after the ledger said they changed, or before a
    /// policy refusal, so the request is checked against the stored ones.
    /// `true` when they had changed. A key no longer stored has nothing to
    /// reload: the ledger refuses it (`UnknownKey`) when its pair is
    /// recorded.
    pub async fn reload_policies(
        self: &Arc<Self>,
        key: &Arc<CachedKey>,
    ) -> Result<bool, StoreError> {
        let store = self.clone();
        let key = key.clone();
        tokio::task::spawn_blocking(move || {
            let Some(stored) = store.catalog.backend().policies(&key.key_id)? else {
                return Ok(false);
            };
            let changed = stored.policy_seq != key.policy().policy_seq;
            if changed {
                store.keys.set_policies(&key, stored);
            }
            Ok(changed)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("policy lookup: {e}")))?
    }

    /// The nonce writer's counters, for `GET /admin/metrics`.
    pub fn writer_metrics(&self) -> &WriterMetrics {
        self.nonces.metrics()
    }

    /// Pairs in the replay window's in-memory front now.
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

    fn refresh_key_states(&self) -> Result<(), StoreError> {
        let backend = self.catalog.backend();
        let version = backend.keys_version()?;
        if version != self.keys.version() {
            for state in backend.key_states()? {
                if let Some(key) = self.keys.update_state(&state) {
                    if let Some(policies) = backend.policies(&state.key_id)? {
                        self.keys.set_policies(&key, policies);
                    }
                }
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

/// One thread per store: the backend's housekeeping (a WAL checkpoint, a
/// purge), polling for key changes made elsewhere, purging the in-memory
/// window and flushing last-used times. It holds only a weak reference, so
/// it ends when the store is dropped.
fn start_maintenance(store: Weak<Store>) {
    std::thread::Builder::new()
        .name("keygate-maintenance".into())
        .spawn(move || {
            let mut tick: u32 = 0;
            let mut housekeeping_failures = RetriedFailure::new("database housekeeping");
            let mut poll_failures = RetriedFailure::new("polling key states");
            let mut clock_failures = RetriedFailure::new("reading the database's clock");
            loop {
                std::thread::sleep(KEY_POLL_INTERVAL);
                let Some(store) = store.upgrade() else { return };
                let now = store.clock().now();
                housekeeping_failures.record(
                    Instant::now(),
                    store.catalog.backend().housekeeping(now, store.skew_secs),
                );
                poll_failures.record(Instant::now(), store.refresh_key_states());
                store.nonces.purge_expired(now);
                tick = tick.wrapping_add(1);
                if tick % FLUSH_LAST_USED_EVERY == 0 {
                    store.flush_last_used();
                }
                if tick % MEASURE_CLOCK_EVERY == 0 {
                    clock_failures.record(
                        Instant::now(),
                        store.clock.measure(store.catalog.backend().as_ref()),
                    );
                }
            }
        })
        .expect("spawn maintenance thread");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// The ledger re-reads the key's row inside every transaction. Here
    /// another connection revokes the key (as the CLI or another keygate
    /// would) and the very next record is refused, before the 200 ms poll
    /// could tell the cache.
    #[test]
    fn a_key_revoked_by_another_connection_is_refused_at_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(dir.path().join("keygate.db"));
        let store = Store::open(&config, 300, Clock::system()).unwrap();
        let name = crate::domain::AppName::parse("test").unwrap();
        let app = store.catalog().create_app(&name, "test").unwrap();
        let app_id = crate::domain::AppId::parse(&app.app_id).unwrap();
        let key_id = store
            .catalog()
            .create_key(&app_id, None, None, "test")
            .unwrap()
            .key_id;
        let key = block_on(store.find_key(&key_id)).unwrap().unwrap();
        let until = store.clock().now() + 60;
        let recorded = block_on(store.record_nonce(&key, "nonce-before-revocation", until, 0));
        assert!(
            matches!(recorded, Ok(PairOutcome::Recorded)),
            "{recorded:?}"
        );

        let other = rusqlite::Connection::open(dir.path().join("keygate.db")).unwrap();
        other
            .execute(
                "UPDATE keys SET revoked_at = ?2 WHERE key_id = ?1",
                rusqlite::params![&key_id, store.clock().now() - 1],
            )
            .unwrap();
        let refused = block_on(store.record_nonce(&key, "nonce-after-revocation", until, 0));
        assert!(
            matches!(refused, Ok(PairOutcome::KeyRevoked)),
            "{refused:?}"
        );
    }
}
