//! The storage boundary: what keygate needs of a database, as two traits.
//! Each backend (`sqlite/`, `postgres/`) implements both; everything above
//! them (the catalog's rules, the key cache, the group-commit writer, the
//! admin API, the CLI, the metrics) is written once. A third backend is a
//! new folder implementing these, not a rewrite.
//!
//! Both traits are synchronous: the admin API calls the catalog on the
//! blocking pool, and the nonce ledger is driven by its own writer thread.

use std::sync::Arc;
use std::time::Instant;

use super::{KeyStatus, StoreError};
use crate::credentials::Sealed;
use crate::domain::{AppId, KeyId};

/// Applications, keys and audit events, as rows. One call is one
/// transaction: a change and its audit event commit together or not at all.
pub trait CatalogBackend: Send + Sync {
    /// The master key check value kept with the data, if one was stored.
    fn master_key_check(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores `value` unless a check value is stored already (another
    /// process may have won the race; the caller reads it back).
    fn init_master_key_check(&self, value: &[u8]) -> Result<(), StoreError>;

    fn insert_app(&self, app: &AppRow, event: &NewAuditEvent) -> Result<(), StoreError>;
    /// Every application with its keys counted (`keys` set; a key is live
    /// when not revoked and not expired at `now`).
    fn list_apps(&self, now: i64) -> Result<Vec<AppRow>, StoreError>;
    fn app(&self, app_id: &AppId) -> Result<Option<AppRow>, StoreError>;
    /// Replaces the application's access policy (`None`: no policy) and
    /// moves the `policy_seq` of each of its keys, in one transaction with
    /// `event`. `AppNotFound` when the application does not exist.
    fn set_app_policy(
        &self,
        app_id: &AppId,
        policy: Option<&str>,
        event: &NewAuditEvent,
    ) -> Result<(), StoreError>;

    /// `AppNotFound` when the application does not exist.
    fn insert_key(
        &self,
        app_id: &AppId,
        key: &StoredKey,
        event: &NewAuditEvent,
    ) -> Result<(), StoreError>;
    /// `AppNotFound` when the application does not exist.
    fn list_keys(&self, app_id: &AppId) -> Result<Vec<KeyRow>, StoreError>;
    fn key(&self, key_id: &KeyId) -> Result<Option<KeyRow>, StoreError>;
    /// In one transaction: the old key must exist (`KeyNotFound`) and be
    /// rotatable (`catalog::refuse_rotation`, the one rule for every
    /// backend, else `Refused`); `new_key` joins the old key's application;
    /// the new key takes the old one's name and access policy (a rotation
    /// replaces a key's secret, not what it may do);
    /// the old key's expiry moves to `old_expires_at` unless it already
    /// expires sooner; `event` is written with the application's id.
    /// Returns the old key as it was before.
    fn rotate_key(
        &self,
        old_key_id: &KeyId,
        new_key: &StoredKey,
        old_expires_at: i64,
        event: &NewAuditEvent,
    ) -> Result<KeyRow, StoreError>;
    /// Replaces the key's access policy and moves its `policy_seq`, with
    /// `event` (given the key's application id). `KeyNotFound` when the
    /// key does not exist. Returns the key as it is after.
    fn set_key_policy(
        &self,
        key_id: &KeyId,
        policy: Option<&str>,
        event: &NewAuditEvent,
    ) -> Result<KeyRow, StoreError>;
    /// Sets `revoked_at` and writes `event` (with the application's id)
    /// unless the key is revoked already; returns the key as it is after.
    fn revoke_key(
        &self,
        key_id: &KeyId,
        revoked_at: i64,
        event: &NewAuditEvent,
    ) -> Result<KeyRow, StoreError>;
    /// Newest first.
    fn audit_events(&self, limit: u32) -> Result<Vec<AuditRow>, StoreError>;

    /// What the verifier needs of a key, its secret still sealed.
    fn verifying_key(&self, key_id: &str) -> Result<Option<SealedVerifyingKey>, StoreError>;
    /// The key's access policy and its application's, as stored now.
    fn policies(&self, key_id: &str) -> Result<Option<StoredPolicies>, StoreError>;
    /// A number that moves whenever a key is created, revoked, has its
    /// expiry changed or its policy (or its application's) replaced, by any
    /// process: the key cache's cue to refresh.
    fn keys_version(&self) -> Result<i64, StoreError>;
    /// Every key's expiry, revocation and policy version.
    fn key_states(&self) -> Result<Vec<KeyState>, StoreError>;

    /// Work the server's maintenance thread does every tick besides the
    /// backend-free parts (SQLite: checkpoint the WAL; PostgreSQL: purge
    /// expired nonces in small chunks). `skew_secs` is the clock skew the
    /// server allows: a shared database keeps a pair that long past its
    /// `expires_at` by its own clock (see `postgres/purge.rs`).
    fn housekeeping(&self, now: i64, skew_secs: u32) -> Result<(), StoreError>;
    /// The database server's clock, Unix seconds, when it is another
    /// machine's that instances must agree with (PostgreSQL); `None` where
    /// keygate's own clock is the only one (SQLite).
    fn database_time(&self) -> Result<Option<f64>, StoreError>;
    /// The earliest signing time accepted: when the database was last
    /// restored from a backup (`sqlite/backup.rs`), if it was.
    fn signed_not_before(&self) -> Result<Option<i64>, StoreError>;
    /// Refuses every signature made before `at` from now on: after the
    /// database was restored (from a backup, pg_restore, PITR), whose
    /// replay window lacks the pairs recorded since the copy. Instances
    /// read it when they start.
    fn set_signed_not_before(&self, at: i64) -> Result<(), StoreError>;
}

/// The replay window's durable half: "record this batch of pairs, tell me
/// which were new", with each key's revocation and expiry re-checked in
/// the same transaction, so a key revoked through any process is refused
/// from the moment the revocation commits. So is its `policy_seq`: a pair
/// whose request was checked against an older policy than the one stored
/// is not recorded ([`PairOutcome::PolicyChanged`]), so a new policy
/// applies from the next request on, in every process.
///
/// Every call gives up at `deadline` (waiting for a lock, a connection or
/// an answer) with `StoreError::Unavailable`: that is what bounds a
/// request's wait by the configured database timeout. Given a deadline
/// already past, the SQLite ledger makes one attempt and does not wait:
/// that is how a request alone tries to commit its own pair before
/// handing it to the writer (`NonceWindow::record_alone`).
pub trait NonceLedger: Send {
    /// Records `pairs` in one transaction and answers for each, in order.
    /// No two pairs in `pairs` are equal (the writer tells copies apart
    /// first). `Err` means nothing was recorded: every request in the
    /// batch is refused (fail closed).
    fn record(
        &mut self,
        pairs: &[PairToRecord],
        now: i64,
        deadline: Instant,
    ) -> Result<Vec<PairOutcome>, StoreError>;
    /// Last-used times, written in batches rather than per request; a time
    /// never moves backwards.
    fn touch_keys(&mut self, used: &[(Arc<str>, i64)], deadline: Instant)
        -> Result<(), StoreError>;
    /// Drops pairs whose `expires_at` is before `now`, when that has to
    /// happen on the writer's connection (SQLite's log); a backend that
    /// purges elsewhere does nothing here.
    fn purge(&mut self, now: i64, deadline: Instant) -> Result<(), StoreError>;
}

/// A (key_id, nonce) pair waiting to be recorded.
#[derive(Debug, Clone)]
pub struct PairToRecord {
    pub key_id: Arc<str>,
    pub nonce: Box<str>,
    /// Until when the pair must be remembered (signing time + skew + 1).
    pub expires_at: i64,
    /// The pair's hash in the in-memory front ([`super::SeenNonces`]).
    pub hash: u64,
    /// When the request stops waiting: the database timeout after it
    /// asked for the pair to be recorded.
    pub deadline: Instant,
    /// The key's policy version the request was checked against.
    pub policy_seq: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairOutcome {
    Recorded,
    /// Recorded before, by this or another process.
    Replayed,
    UnknownKey,
    KeyRevoked,
    KeyExpired,
    /// Not recorded: the key's policy (or its application's) changed since
    /// the request was checked; check it again and retry.
    PolicyChanged,
}

impl PairOutcome {
    /// What the key's row, read in the recording transaction, decides on
    /// its own, by the same rule on every backend: `Some` refusal, or
    /// `None` when the pair may be recorded (new or a replay is then the
    /// backend's to say). `key` is the row's status and policy version,
    /// `None` when there is no such key.
    pub fn refused_by_key(key: Option<(KeyStatus, i64)>, pair: &PairToRecord) -> Option<Self> {
        match key {
            None => Some(PairOutcome::UnknownKey),
            Some((KeyStatus::Revoked, _)) => Some(PairOutcome::KeyRevoked),
            Some((KeyStatus::Expired, _)) => Some(PairOutcome::KeyExpired),
            Some((_, policy_seq)) if policy_seq != pair.policy_seq => {
                Some(PairOutcome::PolicyChanged)
            }
            Some((KeyStatus::Active | KeyStatus::Expiring, _)) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AppRow {
    pub app_id: String,
    pub name: String,
    pub created_at: i64,
    /// The access policy's JSON (`crate::policy`); `None`: no policy.
    pub policy: Option<String>,
    /// Only from `list_apps` (a new application's is none).
    pub keys: Option<KeySummary>,
}

/// An application's keys at a glance, for the listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySummary {
    pub total: i64,
    /// Neither revoked nor expired.
    pub live: i64,
    /// The latest of its keys' last-used times.
    pub last_used_at: Option<i64>,
}

/// A key as stored, times in Unix seconds.
#[derive(Debug, Clone)]
pub struct KeyRow {
    pub key_id: String,
    pub app_id: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
    /// For humans: "ERP sync, prod".
    pub name: Option<String>,
    pub policy: Option<String>,
}

/// A new key's row: its secret only ever sealed.
#[derive(Clone)]
pub struct StoredKey {
    pub key_id: String,
    pub sealed: Sealed,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub name: Option<String>,
}

pub struct SealedVerifyingKey {
    pub app_id: String,
    pub app_name: String,
    pub sealed: Sealed,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub policies: StoredPolicies,
}

/// A key's access policy and its application's, as JSON text, and the
/// key's policy version that both were read at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredPolicies {
    pub key: Option<String>,
    pub app: Option<String>,
    pub policy_seq: i64,
}

/// An audit event to write. `app_id` may be left `None` by the caller
/// where the backend fills it in (rotation, revocation).
#[derive(Debug, Clone)]
pub struct NewAuditEvent {
    pub at: i64,
    pub actor: String,
    /// Which keygate process made the change (`serve@host:pid`, `cli@host`).
    pub instance: String,
    pub action: &'static str,
    pub app_id: Option<String>,
    pub key_id: Option<String>,
    /// JSON text, never a secret.
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct AuditRow {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub instance: Option<String>,
    pub action: String,
    pub app_id: Option<String>,
    pub key_id: Option<String>,
    pub detail: Option<String>,
}

/// What the verifier's cache refreshes of every key.
#[derive(Debug, Clone)]
pub struct KeyState {
    pub key_id: String,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub policy_seq: i64,
}
